// End to end on the built-in pair: `lightreasoner demo` (the current `npm start`) with small
// settings runs a real inference service, sampling, LoRA training, an adapter upload and a
// re-evaluation, and reports numbers that hang together.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

describe("lightreasoner demo on the built-in pair", () => {
  const out = mkdtempSync(join(tmpdir(), "lr-demo-"));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it("samples, selects, trains, pushes and re-evaluates", () => {
    const run = spawnSync(process.execPath, ["bin/lightreasoner.mjs", "demo", "--problems", "24", "--eval-problems", "60", "--steps", "4", "--out", out], {
      encoding: "utf8",
      timeout: 180_000,
    });
    expect(run.status, run.stderr).toBe(0);
    const text = run.stdout;
    const accuracy = text.match(/amateur ([\d.]+)%, expert ([\d.]+)%/);
    expect(accuracy, text).not.toBeNull();
    const sampled = text.match(/sampled (\d+) problems: (\d+) steps, (\d+) above beta/);
    expect(sampled, text).not.toBeNull();
    const [problems, seen, selected] = sampled!.slice(1).map(Number);
    expect(problems).toBe(24);
    expect(selected).toBeLessThanOrEqual(seen);
    expect(seen).toBeGreaterThan(problems);
    expect(text).toMatch(/trained LoRA for 4 steps/);
    expect(text).toMatch(/expert with adapter [0-9a-f]{16}: /);
    // One store line per problem, each with token-exact ids.
    const lines = readFileSync(join(out, "samples.jsonl"), "utf8").trim().split("\n").filter((l) => l.includes('"kind":"trajectory"'));
    expect(lines).toHaveLength(24);
    const stored = lines.map((l) => JSON.parse(l) as { stepsSeen: number; selected: unknown[] });
    expect(stored.reduce((n, r) => n + r.stepsSeen, 0)).toBe(seen);
    expect(stored.reduce((n, r) => n + r.selected.length, 0)).toBe(selected);
  });
});
