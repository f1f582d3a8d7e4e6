import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { logSoftmax } from "#core/math/distribution.ts";
import { float32ArrayToFloat16 } from "#core/math/float16.ts";
import { SeededRandom } from "#core/math/random.ts";
import { selectStep } from "#core/math/selection.ts";
import { type SparseStep, selectFromSummary, summarizeStep, validateSparseStep } from "#core/math/sparse-step.ts";
import { PLAUSIBLE_CANDIDATES, PairSummaryGraph, SUMMARY_TOLERANCE, plausibleFromCandidates, withinSummaryTolerance } from "./pair-summary-graph.ts";
import { sumChunk } from "./row-chunks.ts";

const logp = (probabilities: number[]) => Float32Array.from(probabilities, Math.log);

/** Every field the graph computes exactly is core/math's bit for bit; the three sums are within SUMMARY_TOLERANCE. */
function expectSummary(native: SparseStep, exact: SparseStep): void {
  expect(native.vocabSize).toBe(exact.vocabSize);
  expect(native.alpha).toBe(exact.alpha);
  expect(Array.from(native.plausibleIds)).toEqual(Array.from(exact.plausibleIds));
  expect(Array.from(native.plausibleLogpExpert)).toEqual(Array.from(exact.plausibleLogpExpert));
  expect(Array.from(native.plausibleLogpAmateur)).toEqual(Array.from(exact.plausibleLogpAmateur));
  for (const model of ["expertTop", "amateurTop"] as const) {
    expect(Array.from(native[model].ids), model).toEqual(Array.from(exact[model].ids));
    expect(Array.from(native[model].logp), model).toEqual(Array.from(exact[model].logp));
    expect(withinSummaryTolerance(native[model].restMass, exact[model].restMass), `${model}.restMass ${native[model].restMass} vs ${exact[model].restMass}`).toBe(true);
  }
  expect(withinSummaryTolerance(native.kl, exact.kl), `kl ${native.kl} vs ${exact.kl}`).toBe(true);
  expect(withinSummaryTolerance(native.expertEntropy, exact.expertEntropy), `entropy ${native.expertEntropy} vs ${exact.expertEntropy}`).toBe(true);
}

describe("the pair summary graph on a small vocabulary", () => {
  let graph: PairSummaryGraph;
  beforeAll(async () => {
    graph = await PairSummaryGraph.open(4, { executionProvider: "cpu" });
  });
  afterAll(() => graph?.release());

  it("computes KL, entropy, the plausible set and both top-k as worked out by hand", async () => {
    // pE = (1/2, 1/4, 1/8, 1/8), pA uniform: KL = 1/2 ln 2 + 0 - 2 * 1/8 ln 2 = ln 2 / 4,
    // H = 1/2 ln 2 + 1/4 ln 4 + 2 * 1/8 ln 8 = 7/4 ln 2; at alpha 0.4 the set is pE >= 0.2.
    const s = await graph.summarize({ logpExpert: logp([0.5, 0.25, 0.125, 0.125]), logpAmateur: logp([0.25, 0.25, 0.25, 0.25]), alpha: 0.4, topK: 2 });
    expect(s.kl).toBeCloseTo(Math.LN2 / 4, 6);
    expect(s.expertEntropy).toBeCloseTo((7 / 4) * Math.LN2, 6);
    expect(Array.from(s.plausibleIds)).toEqual([0, 1]);
    expect(Array.from(s.plausibleLogpAmateur)).toEqual([Math.fround(Math.log(0.25)), Math.fround(Math.log(0.25))]);
    expect(Array.from(s.expertTop.ids)).toEqual([0, 1]);
    expect(s.expertTop.restMass).toBeCloseTo(0.25, 6);
    // Four equal amateur probabilities: lower ids first, as core/math orders ties.
    expect(Array.from(s.amateurTop.ids)).toEqual([0, 1]);
    expect(s.amateurTop.restMass).toBeCloseTo(0.5, 6);
    validateSparseStep(s);
  });

  it("orders ties by lower id in the plausible set and the top-k", async () => {
    const logpExpert = logp([0.2, 0.4, 0.2, 0.2]);
    const logpAmateur = logp([0.1, 0.3, 0.3, 0.3]);
    const s = await graph.summarize({ logpExpert, logpAmateur, alpha: 0.4, topK: 3 });
    expect(Array.from(s.plausibleIds)).toEqual([1, 0, 2, 3]);
    expect(Array.from(s.expertTop.ids)).toEqual([1, 0, 2]);
    expect(Array.from(s.amateurTop.ids)).toEqual([1, 2, 3]);
    expectSummary(s, summarizeStep(logpExpert, logpAmateur, { alpha: 0.4, topK: 3 }));
  });

  it("keeps the amateur's 1e-12 smoothing: a token the amateur rules out costs pE * (log pE - log 1e-12)", async () => {
    const logpExpert = logp([0.5, 0.5, 0, 0].map((p) => p || 1e-30));
    const logpAmateur = Float32Array.from([Math.log(0.5), -Infinity, Math.log(0.5), -Infinity]);
    const s = await graph.summarize({ logpExpert, logpAmateur, alpha: 0.1, topK: 4 });
    // 1/2 (ln 1/2 - ln 1/2) + 1/2 (ln 1/2 - ln 1e-12): the -Infinity stays a finite penalty.
    expect(s.kl).toBeCloseTo(0.5 * (Math.log(0.5) - Math.log(1e-12)), 5);
    expectSummary(s, summarizeStep(logpExpert, logpAmateur, { alpha: 0.1, topK: 4 }));
  });

  it("hands rows with masked expert tokens to core/math, which gives exactly its own summary", async () => {
    const logpExpert = Float32Array.from([Math.log(0.75), Math.log(0.25), -Infinity, -Infinity]);
    const logpAmateur = logp([0.25, 0.25, 0.25, 0.25]);
    const s = await graph.summarize({ logpExpert, logpAmateur, alpha: 0.2, topK: 3 });
    expect(s).toEqual(summarizeStep(logpExpert, logpAmateur, { alpha: 0.2, topK: 3 }));
  });

  it("refuses what summarizeStep refuses, naming the parameter", async () => {
    const good = logp([0.25, 0.25, 0.25, 0.25]);
    await expect(graph.summarize({ logpExpert: good, logpAmateur: good, alpha: 0, topK: 1 })).rejects.toThrow(/^alpha: must be a number in \(0, 1\]/);
    await expect(graph.summarize({ logpExpert: good, logpAmateur: good, alpha: 0.2, topK: -1 })).rejects.toThrow(/^k: must be a non-negative integer/);
    await expect(graph.summarize({ logpExpert: good, logpAmateur: good.subarray(0, 3), alpha: 0.2, topK: 1 })).rejects.toThrow(/^logpAmateur: covers 3 tokens/);
    await expect(graph.summarize({ logpExpert: logp([0.5, 0.5]), logpAmateur: logp([0.5, 0.5]), alpha: 0.2, topK: 1 })).rejects.toThrow(/^logpExpert: covers 2 tokens but the summary graph was built for 4/);
    const nan = Float32Array.from([NaN, NaN, NaN, NaN]);
    await expect(graph.summarize({ logpExpert: nan, logpAmateur: good, alpha: 0.2, topK: 1 })).rejects.toThrow(/^logpExpert: has no token with finite log-probability/);
  });
});

describe("the plausible set from the expert's top candidates", () => {
  const candidates = (values: number[]) => ({ ids: Int32Array.from(values, (_, j) => 10 + j), logp: Float32Array.from(values, Math.log) });

  it("cuts where pE < alpha * max", () => {
    expect(Array.from(plausibleFromCandidates(candidates([0.4, 0.2, 0.1]), 0.4, 100)!)).toEqual([10, 11]);
  });

  it("says it cannot tell when every candidate is plausible and the vocabulary holds more", () => {
    expect(plausibleFromCandidates(candidates([0.3, 0.3, 0.3]), 0.4, 100)).toBeNull();
    expect(Array.from(plausibleFromCandidates(candidates([0.3, 0.3, 0.3]), 0.4, 3)!)).toEqual([10, 11, 12]);
  });

  it("takes the set from core/math when a flat expert makes it larger than the candidates", async () => {
    const vocab = 3 * PLAUSIBLE_CANDIDATES;
    const graph = await PairSummaryGraph.open(vocab, { executionProvider: "cpu" });
    try {
      const rng = new SeededRandom(3);
      const logpExpert = logSoftmax(Float32Array.from({ length: vocab }, () => rng.next() * 0.1));
      const logpAmateur = logSoftmax(Float32Array.from({ length: vocab }, () => rng.normal()));
      const s = await graph.summarize({ logpExpert, logpAmateur, alpha: 0.5, topK: 5 });
      expect(s.plausibleIds.length).toBeGreaterThan(PLAUSIBLE_CANDIDATES);
      expectSummary(s, summarizeStep(logpExpert, logpAmateur, { alpha: 0.5, topK: 5 }));
    } finally {
      await graph.release();
    }
  });
});

describe("top-k through the chunks with the best maxima", () => {
  it("equals core/math's top-k, ties by lower id, on rows with few distinct values spread over every chunk", async () => {
    const vocab = 96; // 12 chunks of 8
    const graph = await PairSummaryGraph.open(vocab, { executionProvider: "cpu" });
    try {
      const rng = new SeededRandom(12);
      for (let trial = 0; trial < 40; trial++) {
        // Four levels only: every top-k cut falls inside a tie that crosses chunk boundaries.
        const levels = () => logSoftmax(Float32Array.from({ length: vocab }, () => rng.int(4)));
        const logpExpert = levels();
        const logpAmateur = levels();
        const options = { alpha: [0.9, 0.5][trial % 2], topK: [1, 3, 7, 9, 17, 40, 96, 200][trial % 8] };
        expectSummary(await graph.summarize({ logpExpert, logpAmateur, ...options }), summarizeStep(logpExpert, logpAmateur, options));
      }
    } finally {
      await graph.release();
    }
  });

  it("reads rows that are views into one batch buffer, as a session may hand them", async () => {
    const vocab = 96;
    const graph = await PairSummaryGraph.open(vocab, { executionProvider: "cpu" });
    try {
      const rng = new SeededRandom(5);
      const batch = new Float32Array(3 * vocab);
      for (let row = 0; row < 3; row++) batch.set(logSoftmax(Float32Array.from({ length: vocab }, () => rng.normal() * 3)), row * vocab);
      const view = (row: number) => batch.subarray(row * vocab, (row + 1) * vocab);
      const options = { alpha: 0.2, topK: 5 };
      const native = await graph.summarize({ logpExpert: view(1), logpAmateur: view(2), ...options });
      expectSummary(native, summarizeStep(view(1).slice(), view(2).slice(), options));
    } finally {
      await graph.release();
    }
  });
});

describe("FULL float16 by a Cast", () => {
  it("rounds as core/math's float32ArrayToFloat16 does, bit for bit, across the float32 range", async () => {
    // Every 65,537th float32 bit pattern (all exponents, both signs) and the half-precision
    // landmarks: ties, the overflow edge, subnormals, infinities, signed zeros. No NaN: a
    // log-probability is never NaN (logSoftmax refuses it).
    const bits = new Uint32Array(65_536);
    for (let i = 0; i < bits.length; i++) bits[i] = Math.imul(i, 65_537) >>> 0;
    const sweep = new Float32Array(bits.buffer);
    const landmarks = [0, -0, Infinity, -Infinity, 65504, 65519.99, 65520, -65520, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 2 ** -14, 1 + 2 ** -11, 1 + 3 * 2 ** -11, -1e30];
    landmarks.forEach((v, j) => (sweep[j] = v));
    const rows = sweep.map((v) => (Number.isNaN(v) ? 0 : v));
    const graph = await PairSummaryGraph.open(rows.length, { executionProvider: "cpu" });
    try {
      const reversed = rows.slice().reverse();
      const half = await graph.toFloat16(rows, reversed);
      expect(Array.from(half.expert)).toEqual(Array.from(float32ArrayToFloat16(rows)));
      expect(Array.from(half.amateur)).toEqual(Array.from(float32ArrayToFloat16(reversed)));
    } finally {
      await graph.release();
    }
  });
});

describe("sums in two levels", () => {
  it("chunks a vocabulary by its largest divisor up to the square root, a prime one not at all", () => {
    expect(sumChunk(151_936)).toBe(128);
    expect(sumChunk(384)).toBe(16);
    expect(sumChunk(4)).toBe(2);
    expect(sumChunk(151_937)).toBe(151_937); // prime
    expect(sumChunk(1)).toBe(1);
  });
});

/** Peaked logits like an LM's at a real vocabulary: a noisy floor, a few strong tokens, sometimes a tied peak. */
function lmLogits(rng: SeededRandom, vocab: number): Float32Array {
  const logits = Float32Array.from({ length: vocab }, () => rng.normal() * 2.5);
  const peaks = 1 + rng.int(6);
  for (let j = 0; j < peaks; j++) logits[rng.int(vocab)] += 8 + rng.next() * 10;
  if (rng.next() < 0.4) {
    let best = 0;
    for (let i = 1; i < vocab; i++) if (logits[i] > logits[best]) best = i;
    logits[rng.int(vocab)] = logits[best];
  }
  return logits;
}

describe(`at vocabulary 151,936, within SUMMARY_TOLERANCE (${SUMMARY_TOLERANCE.absolute} + ${SUMMARY_TOLERANCE.relative} relative) of core/math`, () => {
  const V = 151_936;
  let graph: PairSummaryGraph;
  beforeAll(async () => {
    graph = await PairSummaryGraph.open(V, { executionProvider: "cpu" });
  });
  afterAll(() => graph?.release());

  it("equals summarizeStep on random LM-like rows, and the method's decisions from it equal selectStep's", async () => {
    const rng = new SeededRandom(151_936);
    for (let trial = 0; trial < 6; trial++) {
      const logpExpert = logSoftmax(lmLogits(rng, V));
      const logpAmateur = logSoftmax(lmLogits(rng, V));
      const options = { alpha: [0.2, 0.05, 0.5][trial % 3], topK: [4, 0, 64][trial % 3] };
      const native = await graph.summarize({ logpExpert, logpAmateur, ...options });
      expectSummary(native, summarizeStep(logpExpert, logpAmateur, options));
      validateSparseStep(native);
      const full = selectStep({ logpExpert, logpAmateur, alpha: options.alpha, beta: 0.4 });
      const sparse = selectFromSummary(native, { beta: 0.4 });
      expect(sparse.selected).toBe(full.selected);
      expect(Array.from(sparse.targetWeights)).toEqual(Array.from(full.targetWeights));
    }
  });
});
