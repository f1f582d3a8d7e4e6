// The offline stages as a user runs them: `sample`, `train --push` and `eval` against a real
// inference service on loopback serving the built-in pair.
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InferenceServer } from "#inference/main.ts";
import { startInferenceServer } from "#inference/main.ts";
import { writePaperSamples } from "#trainer/store/paper-format.ts";
import { SampleStore } from "#trainer/store/sample-store.ts";
import { TextTokenizer } from "#core/formats/tokenizer.ts";

/** Runs the CLI without blocking this process, which hosts the inference service. */
function cli(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ["bin/lightreasoner.mjs", ...args], { encoding: "utf8", timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe("offline stages through the CLI", () => {
  const dir = mkdtempSync(join(tmpdir(), "lr-offline-"));
  let server: InferenceServer;
  let target: string;
  beforeAll(async () => {
    server = await startInferenceServer({ expertDir: "models/expert", amateurDir: "models/amateur", host: "127.0.0.1", port: 0, metricsPort: 0, logger: pino({ level: "silent" }), access: { allowUnauthenticated: true } });
    target = `127.0.0.1:${server.port}`;
    expect((await cli("world-data", "--out", join(dir, "world"), "--train", "20", "--test", "40")).status).toBe(0);
  });
  afterAll(async () => {
    await server?.close(1000);
    rmSync(dir, { recursive: true, force: true });
  });

  it("sample -> train --push -> eval, with the pushed adapter serving the evaluation", async () => {
    const store = join(dir, "samples.jsonl");
    const sampled = await cli("sample", "--inference", target, "--expert", "models/expert", "--problems", join(dir, "world", "train.jsonl"), "--store", store);
    expect(sampled.status, sampled.stderr).toBe(0);
    const [, problems, seen, selected] = sampled.stdout.match(/(\d+) problems \(0 already stored\), (\d+) steps seen, (\d+) selected/)!.map(Number);
    expect(problems).toBe(20);
    expect(selected).toBeGreaterThan(0);
    expect(selected).toBeLessThanOrEqual(seen);
    // Sampling again resumes: nothing new, nothing duplicated.
    const again = await cli("sample", "--inference", target, "--expert", "models/expert", "--problems", join(dir, "world", "train.jsonl"), "--store", store);
    expect(again.stdout).toMatch(/20 problems \(20 already stored\)/);
    expect(readFileSync(store, "utf8").split("\n").filter((l) => l.includes('"kind":"trajectory"'))).toHaveLength(20);

    const trained = await cli("train", "--expert", "models/expert", "--store", store, "--out", join(dir, "adapter"), "--steps", "3", "--lr", "1e-3", "--push", target);
    expect(trained.status, trained.stderr).toBe(0);
    const version = trained.stdout.match(/version ([0-9a-f]{16})/)?.[1];
    expect(version, trained.stdout).toBeDefined();

    const evaluated = await cli("eval", "--inference", target, "--problems", join(dir, "world", "test.jsonl"), "--out", join(dir, "eval.json"));
    expect(evaluated.status, evaluated.stderr).toBe(0);
    expect(evaluated.stdout).toContain(`adapters ${version}`);
    expect(JSON.parse(readFileSync(join(dir, "eval.json"), "utf8")).perProblem).toHaveLength(40);
  });

  it("trains on samples in the reference scripts' format", async () => {
    // Export what a real sampling run stored to the paper's format, then train from that file.
    const store = join(dir, "for-paper.jsonl");
    expect((await cli("sample", "--inference", target, "--expert", "models/expert", "--problems", join(dir, "world", "train.jsonl"), "--store", store, "--limit", "8")).status).toBe(0);
    const paper = join(dir, "paper.jsonl");
    writePaperSamples(paper, SampleStore.read(store).records, TextTokenizer.load("models/expert"));
    const lines = readFileSync(paper, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(Object.keys(lines[0]).sort()).toEqual(["kl_divergence", "prefix", "prompt_id", "step", "token_ids", "tokens", "weights"]);
    const trained = await cli("train", "--expert", "models/expert", "--paper-samples", paper, "--out", join(dir, "paper-adapter"), "--steps", "2");
    expect(trained.status, trained.stderr).toBe(0);
    expect(trained.stderr).toMatch(new RegExp(`imported ${lines.length} samples`));
    expect(trained.stdout).toMatch(/2 steps, \d+ tuned tokens/);
  });

  it("refuses an expert directory that is not the one the endpoint serves", async () => {
    const run = await cli("sample", "--inference", target, "--expert", "models/amateur", "--problems", join(dir, "world", "train.jsonl"), "--store", join(dir, "other.jsonl"));
    expect(run.status).not.toBe(0);
    expect(run.stderr).toMatch(/fingerprint/i);
  });
});
