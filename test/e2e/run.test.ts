// End to end on the built-in pair: `lightreasoner run` (what `npm start` runs) with small
// settings starts both services as processes, runs LightReasoner online and the SFT baseline,
// stops the services, and writes a report whose numbers hang together.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { SampleStore } from "#trainer/store/sample-store.ts";
import type { RunReport } from "#trainer/report/run-report.ts";

const fraction = (x: unknown) => typeof x === "number" && x >= 0 && x <= 1;

describe("lightreasoner run on the built-in pair", () => {
  const out = mkdtempSync(join(tmpdir(), "lr-run-"));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it("runs both methods through the two services and writes a consistent report", () => {
    const args = ["run", "--batch-size", "8", "--gradient-accumulation", "2", "--sample", "30", "--sft-sample", "30", "--steps", "8", "--sft-steps", "6", "--push-every", "3", "--eval", "80", "--report-dir", out];
    const run = spawnSync(process.execPath, ["bin/lightreasoner.mjs", ...args], { encoding: "utf8", timeout: 240_000 });
    expect(run.status, `${run.stdout}\n${run.stderr}`).toBe(0);
    expect(run.stdout).toMatch(/inference service pid \d+ on 127\.0\.0\.1:\d+.*trainer pid \d+ on 127\.0\.0\.1:\d+/);
    expect(run.stdout).toMatch(/change, paired 95% CI/);

    const report = JSON.parse(readFileSync(join(out, "report.json"), "utf8")) as RunReport;
    // The keys the issue names, with the types it names.
    for (const x of [report.expert.accuracyBefore, report.expert.accuracyAfter, report.amateur.accuracy, report.sft!.accuracyAfter]) expect(fraction(x)).toBe(true);
    for (const ci of [report.expert.accuracyDeltaCi95, report.sft!.accuracyDeltaCi95]) {
      expect(ci).toHaveLength(2);
      expect(ci[0]).toBeLessThanOrEqual(ci[1]);
    }
    expect(report.evalProblems).toBe(80);
    expect(report.tfjsBackend).toMatch(/^(wasm|cpu|node|node-gpu)$/);
    // Where native TensorFlow is absent (this CI), LoRA gradients come from ONNX Runtime.
    expect(report.trainingEngine).toBe(report.tfjsBackend.startsWith("node") ? "tfjs" : "onnxruntime");
    // Each service's peak resident memory over the run, read from /proc before it was stopped.
    expect(Object.keys(report.servicePeakRssBytes ?? {}).sort()).toEqual(["inference", "trainer"]);
    if (process.platform === "linux") for (const bytes of Object.values(report.servicePeakRssBytes!)) expect(bytes).toBeGreaterThan(50 * 2 ** 20);
    const lr = report.lightreasoner;
    const sft = report.sft!;
    for (const n of [lr.problemsSampled, lr.stepsSeen, lr.stepsSelected, lr.tunedTokens, lr.wallSeconds, sft.problemsSampled, sft.tunedTokens, sft.wallSeconds]) {
      expect(typeof n === "number" && Number.isFinite(n) && n > 0, JSON.stringify(report.lightreasoner)).toBe(true);
    }

    // Internal consistency.
    expect(lr.accuracyAfter).toBe(report.expert.accuracyAfter);
    const delta = lr.accuracyAfter - report.expert.accuracyBefore;
    expect(delta).toBeGreaterThanOrEqual(report.expert.accuracyDeltaCi95[0] - 1e-12);
    expect(delta).toBeLessThanOrEqual(report.expert.accuracyDeltaCi95[1] + 1e-12);
    expect(lr.problemsSampled).toBeLessThanOrEqual(30);
    expect(sft.problemsSampled).toBe(30);
    expect(lr.stepsSelected).toBeLessThanOrEqual(lr.stepsSeen);
    expect(lr.optimizerSteps).toBe(8);
    expect(sft.optimizerSteps).toBe(6);
    // LightReasoner's tuned tokens are its selected samples: one loss position per sample and
    // pass, at most every sample stored; 8 steps of 16 samples here, fewer than were selected.
    expect(lr.distinctTunedTokens).toBeLessThanOrEqual(lr.stepsSelected);
    expect(lr.tunedTokens).toBeGreaterThanOrEqual(lr.distinctTunedTokens);
    expect(lr.stepsSelected).toBeGreaterThan(8 * 16);
    expect(lr.tunedTokens).toBe(8 * 16);
    expect(lr.loss.map((p) => p.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    // Online mode pushed at steps 3 and 6 and at the end.
    expect(lr.adapterVersions).toHaveLength(3);
    expect(report.klValues.length).toBe(lr.stepsSeen);
    expect(report.klValues.filter((kl) => kl > Number(report.settings.beta)).length).toBe(lr.stepsSelected);

    // The report agrees with the LightReasoner run's own sample store.
    const records = SampleStore.read(join(out, "trainer", "lightreasoner", "samples.jsonl")).records;
    expect(records.length).toBe(lr.problemsSampled);
    expect(records.reduce((n, r) => n + r.stepsSeen, 0)).toBe(lr.stepsSeen);
    expect(records.reduce((n, r) => n + r.selected.length, 0)).toBe(lr.stepsSelected);
    // The SFT baseline kept exactly the trajectories whose answer was right.
    const sftRecords = SampleStore.read(join(out, "trainer", "sft-baseline", "samples.jsonl")).records;
    expect(sft.trajectoriesKept).toBe(sftRecords.filter((r) => r.answer.correct === true).length);
    expect(sft.distinctTunedTokens).toBe(Math.min(sft.tunedTokens, sftRecords.filter((r) => r.answer.correct === true).reduce((n, r) => n + r.completionTokenIds.length, 0)));

    const html = readFileSync(join(out, "report.html"), "utf8");
    expect(html).toMatch(/<svg/);
    expect(html).not.toMatch(/<script/i);
    expect(existsSync(join(out, "world", "test.jsonl"))).toBe(true);
  });
  it("stops both services when interrupted, instead of leaving them running", async () => {
    const child = spawn(process.execPath, ["bin/lightreasoner.mjs", "run", "--no-sft", "--report-dir", join(out, "interrupted")], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    const pids = await new Promise<number[]>((resolve, reject) => {
      child.stdout!.on("data", (chunk: Buffer) => {
        stdout += chunk.toString();
        const m = /inference service pid (\d+) .* trainer pid (\d+)/.exec(stdout);
        if (m) resolve([Number(m[1]), Number(m[2])]);
      });
      child.once("exit", (code) => reject(new Error(`run exited (${code}) before the services were up: ${stdout}`)));
    });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    child.kill("SIGINT");
    expect(await exited).toBe(130);
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    const left = pids.filter(alive);
    for (const pid of left) process.kill(pid, "SIGKILL"); // a failing run must not leave them behind either
    expect(left).toEqual([]);
  });
});
