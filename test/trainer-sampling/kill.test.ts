// The kill test of the trainer issue: a sampling process killed with SIGKILL in the middle of
// a run and started again stores the same sample set as a run that was never interrupted,
// with no problem lost or stored twice.
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InferenceServer } from "#inference/main.ts";
import { SampleStore } from "#trainer/store/sample-store.ts";
import { expectSameSamples, runSampling, sleep, startServer, writeProblems, writeTinyPair } from "./helpers.ts";
import type { TinyPair } from "./helpers.ts";

const CHILD = resolve(process.cwd(), "test/trainer-sampling/sample-child.ts");

let pair: TinyPair;
let servers: InferenceServer[];
let dir: string;

beforeAll(async () => {
  pair = writeTinyPair();
  servers = await Promise.all([startServer(pair), startServer(pair)]);
  dir = mkdtempSync(join(tmpdir(), "lr-kill-"));
});
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close(1000)));
  pair?.remove();
  rmSync(dir, { recursive: true, force: true });
});

function startChild(options: object): { child: ChildProcess; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> } {
  const child = spawn(process.execPath, ["--import", "tsx", CHILD, JSON.stringify(options)], { cwd: process.cwd(), stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((done) => child.on("exit", (code, signal) => done({ code, signal, stdout, stderr })));
  return { child, exited };
}

/** Complete problem lines in the store file so far (the header is not one). */
function storedLines(path: string): number {
  if (!existsSync(path)) return 0;
  return readFileSync(path, "utf8").split("\n").filter((l) => l.startsWith('{"v":1,"kind":"trajectory"')).length;
}

describe("a sampling process killed mid-run", () => {
  it("restarts where it stopped and ends with the same sample set as an uninterrupted run", async () => {
    const { file, problems } = writeProblems(dir, 60);
    const config = { seed: 777, temperature: 1, maxNewTokens: 48, concurrency: 2, beta: 3.3 };
    const targets = servers.map((s) => s.address);
    const uninterrupted = await runSampling({ targets, storePath: join(dir, "uninterrupted.jsonl"), problems, config, expertDir: pair.expertDir });
    expect(uninterrupted.summary.complete).toBe(true);

    const storePath = join(dir, "killed.jsonl");
    const options = { targets, expertDir: pair.expertDir, problemsFile: file, storePath, config };
    const first = startChild(options);
    const deadline = Date.now() + 60_000;
    while (storedLines(storePath) < 5) {
      if (Date.now() > deadline) throw new Error(`the child stored nothing in time: ${(await Promise.race([first.exited, sleep(0).then(() => null)]))?.stderr ?? "still running"}`);
      await sleep(5);
    }
    first.child.kill("SIGKILL");
    const killed = await first.exited;
    expect(killed.signal).toBe("SIGKILL");
    const survived = SampleStore.read(storePath);
    // Killed part-way: some problems stored, not all (else this test would prove nothing).
    expect(survived.records.length).toBeGreaterThanOrEqual(5);
    expect(survived.records.length).toBeLessThan(60);

    const second = startChild(options);
    const finished = await second.exited;
    expect(finished.code, finished.stderr).toBe(0);
    const report = JSON.parse(finished.stdout) as { alreadyStored: number; sampled: number; recoveredBytes: number; complete: boolean };
    expect(report.alreadyStored).toBe(survived.records.length);
    expect(report.recoveredBytes).toBe(survived.tornBytes);
    expect(report.alreadyStored + report.sampled).toBe(60);
    expect(report.complete).toBe(true);

    const final = SampleStore.read(storePath);
    expect(final.tornBytes).toBe(0);
    // SampleStore.read refuses a problem stored twice; every problem is there once.
    expect(final.records.map((r) => r.problemId).sort()).toEqual(problems.map((p) => p.id).sort());
    expectSameSamples(final.records, uninterrupted.records);
    // The same trajectories token for token.
    const reference = new Map(uninterrupted.records.map((r) => [r.problemId, r.completionTokenIds]));
    for (const r of final.records) expect(r.completionTokenIds).toEqual(reference.get(r.problemId));
  });
});
