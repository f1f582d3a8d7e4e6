// The trainer's feed over a real loopback socket: trajectories written by the expert with
// both models' distributions at every step. The incremental, batched, KV-cached lockstep
// path must give what ONE full forward of each model over the final token sequence gives;
// SPARSE must carry the quantities FULL implies (exactly, or within the native summary's
// float32 tolerance for its sums); a seed must give the same
// trajectory alone and in a batch of 8.
import { toBinary } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChatRole, FinishReason, FloatDtype, SparseDistributionsSchema } from "#core/gen/lightreasoner/v1/common_pb.ts";
import type { ScoredPosition, SparseDistributions } from "#core/gen/lightreasoner/v1/common_pb.ts";
import type { TrajectoryRequestSchema } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { klDivergence, entropy, topK } from "#core/math/distribution.ts";
import { float16BitsToFloat32, float32ToFloat16Bits } from "#core/math/float16.ts";
import { selectFromSummary } from "#core/math/sparse-step.ts";
import type { SparseStep } from "#core/math/sparse-step.ts";
import { selectStep } from "#core/math/selection.ts";
import { SeededRandom } from "#core/math/random.ts";
import { argmaxToken, sampleToken } from "#core/math/sampling.ts";
import type { InferenceServer } from "#inference/main.ts";
import type { CausalLmSession } from "#inference/model/session.ts";
import { withinSummaryTolerance } from "#inference/model/pair-summary-graph.ts";
import { SCORE_POSITIONS_PER_STEP } from "#inference/server/score-steps.ts";
import {
  FULL16,
  FULL32,
  VOCAB,
  byRequest,
  clients,
  collect,
  fullForward,
  fullOf,
  idsPrompt,
  maxAbsDiff,
  metric,
  openDirect,
  scrape,
  sparse,
  startServer,
  textPrompt,
  writeTinyPair,
} from "./helpers.ts";
import type { TinyPair, Trajectory } from "./helpers.ts";

const TOLERANCE = 1e-4;

let pair: TinyPair;
let server: InferenceServer;
let client: ReturnType<typeof clients>;
let expertDirect: CausalLmSession;
let amateurDirect: CausalLmSession;

beforeAll(async () => {
  pair = writeTinyPair();
  server = await startServer(pair, { limits: { maxBatchSize: 8 } });
  client = clients(server);
  expertDirect = await openDirect(pair.expertDir);
  amateurDirect = await openDirect(pair.amateurDir);
});

afterAll(async () => {
  client?.close();
  await server?.close(1000);
  await expertDirect?.release();
  await amateurDirect?.release();
  pair?.remove();
});

type Start = MessageInitShape<typeof TrajectoryRequestSchema>;

/** Runs the given trajectories over ONE call, all started before any is read, and splits the answers by id. */
async function trajectories(starts: Record<string, Start>): Promise<{ byId: Map<string, Trajectory>; order: string[] }> {
  const call = client.inference.streamTrajectories();
  for (const [requestId, value] of Object.entries(starts)) await call.write({ requestId, action: { case: "start", value } });
  call.end();
  const messages = await collect(call);
  return { byId: byRequest(messages), order: messages.map((m) => m.requestId) };
}

/** Checks every step of `t` against full forwards of both models over prompt + completion. */
async function expectExact(t: Trajectory): Promise<void> {
  const completion = t.steps.map((s) => s.scored.tokenId);
  const ids = [...t.promptIds, ...completion];
  const [expertRows, amateurRows] = await Promise.all([fullForward(expertDirect, ids), fullForward(amateurDirect, ids)]);
  for (const step of t.steps) {
    expect(step.scored.position).toBe(t.promptIds.length + step.step);
    const { expert, amateur } = fullOf(step.scored);
    expect(expert.length).toBe(VOCAB);
    // Row position - 1 of the full forward is the distribution over the token at `position`.
    expect(maxAbsDiff(expert, expertRows[step.scored.position - 1])).toBeLessThan(TOLERANCE);
    expect(maxAbsDiff(amateur, amateurRows[step.scored.position - 1])).toBeLessThan(TOLERANCE);
  }
}

describe("FULL distributions are exactly the models' full forwards", () => {
  let result: Awaited<ReturnType<typeof trajectories>>;
  beforeAll(async () => {
    result = await trajectories({
      sampled: { prompt: textPrompt("Tom has 3 apples and buys 4 more."), sampling: { temperature: 1, seed: 7, maxNewTokens: 14 }, distributions: FULL32 },
      greedy: {
        prompt: { source: { case: "chat", value: { systemPrompt: "Please reason step by step.", messages: [{ role: ChatRole.USER, content: "What is 2 + 5?" }] } } },
        sampling: { temperature: 0, maxNewTokens: 10 },
        distributions: FULL32,
      },
      nucleus: { prompt: idsPrompt([5, 200, 17, 300, 42]), sampling: { temperature: 0.7, topP: 0.9, seed: 99, maxNewTokens: 12 }, distributions: FULL32 },
    });
  });

  it("every trajectory starts, streams its steps in order and finishes with its counts", () => {
    for (const id of ["sampled", "greedy", "nucleus"]) {
      const t = result.byId.get(id)!;
      expect(t.events[0].event.case).toBe("started");
      expect(t.finished.end!.finishReason === FinishReason.LENGTH || t.finished.end!.finishReason === FinishReason.EOS).toBe(true);
      expect(t.finished.end!.usage?.completionTokens).toBe(t.steps.length);
      expect(t.finished.end!.usage?.promptTokens).toBe(t.promptIds.length);
      expect(t.finished.completionText).toBe(t.steps.map((s) => s.tokenText).join(""));
      expect(t.steps.length).toBeGreaterThan(3);
      const timings = t.finished.end!.timings!;
      expect(timings.queueWaitMs).toBeGreaterThanOrEqual(0);
      expect(timings.timeToFirstStepMs).toBeGreaterThanOrEqual(timings.queueWaitMs);
      expect(timings.totalMs).toBeGreaterThanOrEqual(timings.timeToFirstStepMs);
    }
    expect(result.byId.get("sampled")!.seed).toBe(7);
    // The chat template was applied: init-model's llama template starts with BOS and marks turns.
    expect(result.byId.get("greedy")!.events[0].event.value).toMatchObject({ promptText: expect.stringContaining("<|im_start|>system\nPlease reason step by step.<|im_end|>") });
    expect(result.byId.get("nucleus")!.promptIds).toEqual([5, 200, 17, 300, 42]);
  });

  it("steps of the three trajectories interleave on the one call", () => {
    const first = result.order.indexOf("sampled");
    const last = result.order.lastIndexOf("sampled");
    expect(result.order.slice(first, last).some((id) => id !== "sampled")).toBe(true);
  });

  it("expert and amateur distributions at every step equal one full forward over the final sequence (1e-4)", async () => {
    for (const t of result.byId.values()) await expectExact(t);
  });

  it("greedy takes the expert's argmax at every step", () => {
    for (const step of result.byId.get("greedy")!.steps) expect(step.scored.tokenId).toBe(argmaxToken(fullOf(step.scored).expert));
  });

  it("sampled and nucleus trajectories draw core/math's token from the streamed rows, seed for seed (the server samples on its graph)", () => {
    for (const [id, seed, temperature, topP] of [["sampled", 7, 1, 1], ["nucleus", 99, 0.7, 0.9]] as const) {
      const rng = new SeededRandom(seed);
      for (const step of result.byId.get(id)!.steps) expect(step.scored.tokenId, `${id} step ${step.step}`).toBe(sampleToken(fullOf(step.scored).expert, { temperature, topP }, rng));
    }
  });

  it("Score's single full forward agrees with the incremental steps", async () => {
    const t = result.byId.get("sampled")!;
    const ids = [...t.promptIds, ...t.steps.map((s) => s.scored.tokenId)];
    const messages = await collect(client.inference.score({ prompt: idsPrompt(ids), firstPosition: t.promptIds.length, distributions: FULL32 }));
    expect(messages[0].event.case).toBe("started");
    const positions = messages.slice(1).map((m) => m.event.value as ScoredPosition);
    expect(positions.map((p) => p.position)).toEqual(Array.from({ length: ids.length - t.promptIds.length + 1 }, (_, k) => t.promptIds.length + k));
    for (const [k, step] of t.steps.entries()) {
      expect(positions[k].tokenId).toBe(step.scored.tokenId);
      const scored = fullOf(positions[k]);
      const streamed = fullOf(step.scored);
      expect(maxAbsDiff(scored.expert, streamed.expert)).toBeLessThan(TOLERANCE);
      expect(maxAbsDiff(scored.amateur, streamed.amateur)).toBeLessThan(TOLERANCE);
    }
    // The last position has no token: it is the distribution after the whole sequence.
    expect(positions.at(-1)!.tokenId).toBeUndefined();
  });

  it("Score of a sequence longer than one step (SCORE_POSITIONS_PER_STEP) equals one full forward over it, from any first position", async () => {
    const ids = Array.from({ length: 2 * SCORE_POSITIONS_PER_STEP + 22 }, (_, j) => (13 * j + 7) % VOCAB);
    const [expertRows, amateurRows] = await Promise.all([fullForward(expertDirect, ids), fullForward(amateurDirect, ids)]);
    for (const first of [1, SCORE_POSITIONS_PER_STEP + 9]) {
      const messages = await collect(client.inference.score({ prompt: idsPrompt(ids), firstPosition: first, distributions: FULL32 }));
      expect(messages[0].event.case).toBe("started");
      const positions = messages.slice(1).map((m) => m.event.value as ScoredPosition);
      expect(positions.map((p) => p.position)).toEqual(Array.from({ length: ids.length - first + 1 }, (_, k) => first + k));
      for (const p of positions) {
        expect(p.tokenId).toBe(p.position < ids.length ? ids[p.position] : undefined);
        // Row position - 1 of the full forward is the distribution over the token at `position`.
        expect(maxAbsDiff(fullOf(p).expert, expertRows[p.position - 1]), `position ${p.position}`).toBeLessThan(TOLERANCE);
        expect(maxAbsDiff(fullOf(p).amateur, amateurRows[p.position - 1]), `position ${p.position}`).toBeLessThan(TOLERANCE);
      }
    }
  });
});

describe("SPARSE carries what FULL implies, in tens of bytes", () => {
  let full: Trajectory;
  let half: Trajectory;
  let summary: Trajectory;
  beforeAll(async () => {
    // Each runs alone, one after the other: the same batch shape gives bit-identical float32
    // results, whereas rows of one batch may differ in the last bit (ONNX Runtime's kernels).
    const request = (distributions: object) => ({ prompt: textPrompt("Sara reads 12 pages a day."), sampling: { temperature: 1, seed: 2024, maxNewTokens: 16 }, distributions });
    full = (await trajectories({ full: request(FULL32) })).byId.get("full")!;
    half = (await trajectories({ half: request(FULL16) })).byId.get("half")!;
    summary = (await trajectories({ summary: request(sparse(0.2, 5)) })).byId.get("summary")!;
    expect(summary.steps.map((s) => s.scored.tokenId)).toEqual(full.steps.map((s) => s.scored.tokenId));
    expect(half.steps.map((s) => s.scored.tokenId)).toEqual(full.steps.map((s) => s.scored.tokenId));
  });

  it("KL and entropy equal those computed from FULL, within the native summary's float32 tolerance", () => {
    for (const [k, step] of summary.steps.entries()) {
      const s = step.scored.distributions.value as SparseDistributions;
      const { expert, amateur } = fullOf(full.steps[k].scored);
      expect(withinSummaryTolerance(s.klDivergence, klDivergence(expert, amateur)), `KL at step ${k}`).toBe(true);
      expect(withinSummaryTolerance(s.expertEntropy, entropy(expert)), `entropy at step ${k}`).toBe(true);
      expect(s.klDivergence).toBeGreaterThan(0);
    }
  });

  it("plausible set, contrastive weights and selection rebuilt from SPARSE equal the method on FULL", () => {
    for (const [k, step] of summary.steps.entries()) {
      const s = step.scored.distributions.value as SparseDistributions;
      const { expert, amateur } = fullOf(full.steps[k].scored);
      const fromFull = selectStep({ logpExpert: expert, logpAmateur: amateur, alpha: 0.2, beta: 0.4 });
      const fromSparse = selectFromSummary(asSparseStep(s, 0.2), { beta: 0.4 });
      expect(Array.from(fromSparse.plausibleIds)).toEqual(Array.from(fromFull.plausibleIds));
      expect(Array.from(fromSparse.targetWeights)).toEqual(Array.from(fromFull.targetWeights));
      expect(Array.from(fromSparse.plausibleLogpAmateur)).toEqual(Array.from(fromFull.plausibleLogpAmateur));
      expect(fromSparse.selected).toBe(fromFull.selected);
      const expertTop = topK(expert, 5);
      expect(s.expertTop?.tokenIds).toEqual(Array.from(expertTop.ids));
      expect(s.expertTop?.logProbs).toEqual(Array.from(expertTop.logp));
      expect(s.amateurTop?.tokenIds).toEqual(Array.from(topK(amateur, 5).ids));
      expect(s.expertTop!.omittedMass).toBeCloseTo(1 - Array.from(expertTop.logp).reduce((m, l) => m + Math.exp(l), 0), 6);
    }
  });

  it("a SPARSE step (top_k 0) is tens of bytes where FULL is 8 bytes per vocabulary entry", async () => {
    const { byId } = await trajectories({ lean: { prompt: textPrompt("Sara reads 12 pages a day."), sampling: { temperature: 1, seed: 2024, maxNewTokens: 16 }, distributions: sparse(0.2, 0) } });
    const sizes = byId.get("lean")!.steps.map((step) => toBinary(SparseDistributionsSchema, step.scored.distributions.value as SparseDistributions).length);
    const mean = sizes.reduce((a, b) => a + b, 0) / sizes.length;
    expect(mean).toBeLessThan(100);
    expect(Math.max(...sizes)).toBeLessThan(300);
    expect(VOCAB * 2 * 4).toBeGreaterThan(30 * mean);
  });

  it("FULL float16 is the float32 log-probabilities rounded to half precision", () => {
    for (const [k, step] of half.steps.entries()) {
      const wire = step.scored.distributions.value as { dtype: FloatDtype; expertLogProbs: Uint8Array };
      expect(wire.dtype).toBe(FloatDtype.FLOAT16);
      expect(wire.expertLogProbs.length).toBe(VOCAB * 2);
      const rounded = Array.from(fullOf(full.steps[k].scored).expert, (v) => float16BitsToFloat32(float32ToFloat16Bits(v)));
      expect(Array.from(fullOf(step.scored).expert)).toEqual(rounded);
    }
  });
});

/** The wire message as core/math's SparseStep. */
function asSparseStep(s: SparseDistributions, alpha: number): SparseStep {
  const top = (t: SparseDistributions["expertTop"]) => ({ ids: Int32Array.from(t?.tokenIds ?? []), logp: Float32Array.from(t?.logProbs ?? []), restMass: t?.omittedMass ?? 1 });
  return {
    vocabSize: VOCAB,
    alpha,
    kl: s.klDivergence,
    expertEntropy: s.expertEntropy,
    plausibleIds: Int32Array.from(s.plausibleTokenIds),
    plausibleLogpExpert: Float32Array.from(s.plausibleExpertLogProbs),
    plausibleLogpAmateur: Float32Array.from(s.plausibleAmateurLogProbs),
    expertTop: top(s.expertTop),
    amateurTop: top(s.amateurTop),
  };
}

describe("continuous batching", () => {
  const prompts = ["One", "Two plus two is four.", "A train leaves at 9 and", "x", "The answer is", "Count: 1, 2, 3,", "If a = 5 then 2a =", "Hello hello hello hello hello"];
  const request = (i: number) => ({ prompt: textPrompt(prompts[i]), sampling: { temperature: 0.9, topP: 0.95, seed: 1000 + i, maxNewTokens: 20 }, distributions: sparse(0.2, 0) });

  it("a seeded trajectory is the same alone and in a batch of 8 (prompts of different lengths)", async () => {
    const alone: number[][] = [];
    for (let i = 0; i < prompts.length; i++) alone.push((await trajectories({ [`t${i}`]: request(i) })).byId.get(`t${i}`)!.steps.map((s) => s.scored.tokenId));
    const before = await scrape(server);
    const { byId } = await trajectories(Object.fromEntries(prompts.map((_, i) => [`t${i}`, request(i)])));
    const after = await scrape(server);
    for (let i = 0; i < prompts.length; i++) expect(byId.get(`t${i}`)!.steps.map((s) => s.scored.tokenId), `trajectory ${i}`).toEqual(alone[i]);
    // The eight really ran together: some expert batches held more than 4 sequences.
    const bigBatches = (s: typeof before) => metric(s, "lightreasoner_inference_batch_size_count", { model: "expert" }) - metric(s, "lightreasoner_inference_batch_size_bucket", { model: "expert", le: "4" });
    expect(bigBatches(after) - bigBatches(before)).toBeGreaterThan(5);
  });
});
