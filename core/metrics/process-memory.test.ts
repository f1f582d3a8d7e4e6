// A process's peak resident set as the services and the benchmark report it (VmHWM) is its
// own. Linux starts a child's getrusage maxRSS at what its parent held when it forked, so a
// section run in a child of a bench that had a 0.5B pair resident once reported the bench's
// memory as the trainer's.
import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { processMemory } from "#core/metrics/process-memory.ts";

const MiB = 2 ** 20;

describe.runIf(process.platform === "linux")("processMemory", () => {
  it("gives a child its own peak where getrusage gives it the parent's resident set", () => {
    const held = Buffer.alloc(384 * MiB, 1);
    const report = "import('#core/metrics/process-memory.ts').then((m) => console.log(JSON.stringify({ own: m.processMemory(process.pid).peakRssBytes, rusage: process.resourceUsage().maxRSS * 1024 })))";
    const child = JSON.parse(execFileSync(process.execPath, ["--import", "tsx", "-e", report], { encoding: "utf8" })) as { own: number; rusage: number };
    expect(held[held.length - 1]).toBe(1);
    expect(child.rusage).toBeGreaterThan(384 * MiB);
    expect(child.own).toBeLessThan(256 * MiB);
    expect(child.own).toBeGreaterThan(10 * MiB);
  });

  it("reads the peak, the current and the file-mapped resident set of this process", () => {
    const memory = processMemory(process.pid);
    expect(memory.peakRssBytes).toBeGreaterThanOrEqual(memory.rssBytes);
    expect(memory.fileRssBytes).toBeLessThanOrEqual(memory.rssBytes);
    expect(memory.rssBytes).toBeGreaterThan(10 * MiB);
  });
});
