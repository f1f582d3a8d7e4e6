// Stage 1 end to end against a real inference server on loopback: the store it produces,
// SPARSE against FULL, determinism of the seed, and the SFT (rejection sampling) variant.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "#core/grpc/adapter.ts";
import { DistributionEncoding, FloatDtype } from "#core/gen/lightreasoner/v1/common_pb.ts";
import type { FullDistributions } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { InferenceService } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { TextTokenizer } from "#core/formats/tokenizer.ts";
import { selectStep } from "#core/math/selection.ts";
import { isCorrect } from "#core/tasks/answers.ts";
import type { InferenceServer } from "#inference/main.ts";
import { withinSummaryTolerance } from "#inference/model/pair-summary-graph.ts";
import { encodeChatPrompt } from "#trainer/sampling/prompt.ts";
import { fullLogProbs } from "#trainer/sampling/step-selection.ts";
import { SampleStore } from "#trainer/store/sample-store.ts";
import type { TrajectoryRecord } from "#trainer/store/records.ts";
import { BASE_CONFIG, byProblem, expectSameSamples, runSampling, sampleSet, startServer, writeProblems, writeTinyPair } from "./helpers.ts";
import type { TinyPair } from "./helpers.ts";

let pair: TinyPair;
let server: InferenceServer;
let dir: string;

beforeAll(async () => {
  pair = writeTinyPair();
  server = await startServer(pair);
  dir = mkdtempSync(join(tmpdir(), "lr-sampling-"));
});
afterAll(async () => {
  await server?.close(1000);
  pair?.remove();
  rmSync(dir, { recursive: true, force: true });
});

describe("sampling against a real inference server", () => {
  let records: TrajectoryRecord[];
  const { problems } = (() => ({ problems: [] as ReturnType<typeof writeProblems>["problems"] }))();

  beforeAll(async () => {
    problems.push(...writeProblems(dir, 12).problems);
    const kls: number[] = [];
    const run = await runSampling({
      targets: [server.address],
      storePath: join(dir, "sparse.jsonl"),
      problems,
      expertDir: pair.expertDir,
      onEvent: (e) => e.type === "problem" && kls.push(...e.kls),
    });
    records = run.records;
    expect(run.summary).toMatchObject({ problemsTotal: 12, alreadyStored: 0, sampled: 12, retries: 0, complete: true });
    // The events carry every step's KL (for the histogram), exactly those stored.
    expect(kls.sort()).toEqual(records.flatMap((r) => r.stepKls).sort());
  });

  it("stores one record per problem with token-exact prompts and every step decided", () => {
    expect(records.map((r) => r.problemId).sort()).toEqual(problems.map((p) => p.id).sort());
    const tokenizer = TextTokenizer.load(pair.expertDir);
    const counts = SampleStore.read(join(dir, "sparse.jsonl")).records.reduce((n, r) => n + r.stepsSeen, 0);
    let selected = 0;
    for (const r of records) {
      const problem = problems.find((p) => p.id === r.problemId)!;
      // The server's encoding of the ChatPrompt is what importing the paper's text reproduces.
      expect(r.promptTokenIds).toEqual(encodeChatPrompt(tokenizer, problem.question));
      expect(r.stepsSeen).toBe(r.completionTokenIds.length);
      expect(r.stepKls).toHaveLength(r.completionTokenIds.length);
      // beta is strict: exactly the steps with KL > beta are kept, in order, with soft labels summing to 1.
      expect(r.selected.map((s) => s.step)).toEqual(r.stepKls.flatMap((kl, t) => (kl > BASE_CONFIG.beta ? [t] : [])));
      for (const s of r.selected) {
        expect(s.kl).toBe(r.stepKls[s.step]);
        expect(s.weights.reduce((a, w) => a + w, 0)).toBeCloseTo(1, 12);
      }
      selected += r.selected.length;
      expect(r.answer).toEqual({ predicted: r.answer.predicted, reference: problem.reference, correct: isCorrect(r.completionText, problem.reference!) });
      expect(["length", "eos"]).toContain(r.finishReason);
    }
    expect(selected).toBeGreaterThan(0);
    expect(selected).toBeLessThan(counts);
  });

  it("keeps prefixes token-exact: a full forward over the stored ids gives the stored KL at every step", async () => {
    const client = createClient(InferenceService, server.address);
    try {
      for (const r of records.slice(0, 3)) {
        const ids = [...r.promptTokenIds, ...r.completionTokenIds];
        const scored = [];
        for await (const m of client.score({ prompt: { source: { case: "tokenIds", value: { ids } } }, firstPosition: r.promptTokenIds.length, distributions: { encoding: DistributionEncoding.FULL, dtype: FloatDtype.FLOAT32 } })) {
          if (m.event.case === "position") scored.push(m.event.value);
        }
        for (let t = 0; t < r.completionTokenIds.length; t++) {
          const position = scored[t];
          expect(position.position).toBe(r.promptTokenIds.length + t);
          expect(position.tokenId).toBe(r.completionTokenIds[t]);
          expect(position.distributions.case).toBe("full");
          const { expert, amateur } = fullLogProbs(position.distributions.value as FullDistributions, 384);
          const decision = selectStep({ logpExpert: expert, logpAmateur: amateur, alpha: 0.2, beta: BASE_CONFIG.beta });
          expect(Math.abs(decision.kl - r.stepKls[t])).toBeLessThan(1e-3);
        }
      }
    } finally {
      client.close();
    }
  });

  // One trajectory at a time, every forward has batch size 1: runs are then bit-reproducible.
  let alone: TrajectoryRecord[];

  it("gives the same samples from SPARSE and FULL float32, and the same trajectories from FULL float16", async () => {
    alone = (await runSampling({ targets: [server.address], storePath: join(dir, "sparse-alone.jsonl"), problems, config: { concurrency: 1 } })).records;
    const full = await runSampling({ targets: [server.address], storePath: join(dir, "full32.jsonl"), problems, config: { encoding: "full", fullDtype: "float32", concurrency: 1 } });
    // Every token, plausible set, weight and decision is the same; SPARSE's KL is the server's
    // float32 sum (ONNX Runtime), FULL's the trainer's float64 one: equal within SUMMARY_TOLERANCE.
    const kls = (r: TrajectoryRecord) => [...r.stepKls, ...r.selected.map((s) => s.kl)];
    const sparseAlone = byProblem(alone);
    for (const r of full.records) {
      const s = sparseAlone.get(r.problemId)!;
      const discrete = (t: TrajectoryRecord) => ({ ...t, stepKls: t.stepKls.length, selected: t.selected.map((x) => ({ ...x, kl: 0 })) });
      expect(discrete(r)).toEqual(discrete(s));
      kls(r).forEach((kl, t) => expect(withinSummaryTolerance(kls(s)[t], kl), `KL ${t} of ${r.problemId}: ${kls(s)[t]} vs ${kl}`).toBe(true));
    }
    expect(full.records.length).toBe(alone.length);
    // Four at a time instead of one: the same tokens and decisions, floats equal to the last bits.
    expectSameSamples(records, alone);

    const half = await runSampling({ targets: [server.address], storePath: join(dir, "full16.jsonl"), problems, config: { encoding: "full", fullDtype: "float16" } });
    const sparse = byProblem(records);
    for (const r of half.records) {
      const s = sparse.get(r.problemId)!;
      expect(r.completionTokenIds).toEqual(s.completionTokenIds);
      r.stepKls.forEach((kl, t) => expect(Math.abs(kl - s.stepKls[t])).toBeLessThan(0.05));
    }
  });

  it("gives the same sample set for the same seed and another one for another seed", async () => {
    const again = await runSampling({ targets: [server.address], storePath: join(dir, "again.jsonl"), problems, config: { concurrency: 1 } });
    expect(again.records).toEqual(alone);
    const other = await runSampling({ targets: [server.address], storePath: join(dir, "other.jsonl"), problems, config: { seed: 99 } });
    expect(sampleSet(other.records).map((s) => s.prefixTokenIds)).not.toEqual(sampleSet(records).map((s) => s.prefixTokenIds));
  });

  it("resumes a store: only the problems not yet stored are sampled, and the set equals a run in one go", async () => {
    const path = join(dir, "resume.jsonl");
    const first = await runSampling({ targets: [server.address], storePath: path, problems: problems.slice(0, 5) });
    expect(first.summary.sampled).toBe(5);
    const second = await runSampling({ targets: [server.address], storePath: path, problems });
    expect(second.summary).toMatchObject({ alreadyStored: 5, sampled: 7, complete: true });
    expect(second.summary.counts.problems).toBe(12);
    expectSameSamples(second.records, records);
  });

  it("stops when cancelled, keeping what is stored, and a later run completes the same set", async () => {
    const path = join(dir, "cancelled.jsonl");
    const stop = new AbortController();
    let stored = 0;
    const cancelled = await runSampling({ targets: [server.address], storePath: path, problems, config: { concurrency: 1 }, signal: stop.signal, onEvent: (e) => e.type === "problem" && ++stored === 3 && stop.abort() });
    expect(cancelled.summary.complete).toBe(false);
    expect(cancelled.records).toHaveLength(3);
    const rest = await runSampling({ targets: [server.address], storePath: path, problems, config: { concurrency: 1 } });
    expect(rest.summary).toMatchObject({ alreadyStored: 3, sampled: 9, complete: true });
    expect(rest.records).toEqual(alone);
  });

  it("refuses to continue a store with another beta", async () => {
    await expect(runSampling({ targets: [server.address], storePath: join(dir, "sparse.jsonl"), problems, config: { beta: 1 } })).rejects.toThrow(/beta: stored 3\.3, now 1/);
  });
});

describe("rejection-sampling SFT data", () => {
  it("writes whole trajectories without distributions and tries again while the answer is wrong", async () => {
    const { problems } = writeProblems(dir, 4, 100);
    const { records, summary } = await runSampling({ targets: [server.address], storePath: join(dir, "sft.jsonl"), problems, config: { method: "sft", sftAttempts: 3 } });
    expect(summary.complete).toBe(true);
    for (const r of records) {
      expect(r.selected).toEqual([]);
      expect(r.stepKls).toEqual([]);
      // A random model is (almost) never right: each wrong answer earns another attempt, up to 3.
      expect(r.attempts).toBe(r.answer.correct ? r.attempts : 3);
      expect(r.stepsSeen).toBeGreaterThanOrEqual(r.completionTokenIds.length);
      expect(isCorrect(r.completionText, r.answer.reference!)).toBe(r.answer.correct);
    }
    expect(summary.counts.stepsSeen).toBe(records.reduce((n, r) => n + r.stepsSeen, 0));
  });
});
