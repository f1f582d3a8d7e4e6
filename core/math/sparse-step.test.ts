import { describe, expect, it } from "vitest";
import { logSoftmax } from "./distribution.ts";
import { SeededRandom } from "./random.ts";
import { type StepSelection, selectStep } from "./selection.ts";
import { type SparseStep, selectFromSummary, summarizeStep, summarizeStepInPasses, validateSparseStep } from "./sparse-step.ts";

/** Peaked logits like an LM's: a noisy floor, a few boosted tokens, and some exact ties. */
function peakedLogits(rng: SeededRandom, vocab: number): Float32Array {
  const logits = Float32Array.from({ length: vocab }, () => rng.normal() * 2);
  const peaks = 1 + rng.int(6);
  for (let j = 0; j < peaks; j++) logits[rng.int(vocab)] += 6 + rng.next() * 6;
  // Copy a peak onto another id now and then, so the plausible set has ties to order.
  if (rng.next() < 0.3) logits[rng.int(vocab)] = logits[argmax(logits)];
  // Some steps where the amateur masks tokens outright.
  if (rng.next() < 0.2) for (let j = 0; j < 5; j++) logits[rng.int(vocab)] = -Infinity;
  return logits;
}

function argmax(xs: Float32Array): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i] > xs[best]) best = i;
  return best;
}

/** Equal bit for bit, including the sign of zero. */
function expectIdentical(sparse: StepSelection, full: StepSelection): void {
  expect(Object.is(sparse.kl, full.kl)).toBe(true);
  expect(Object.is(sparse.entropy, full.entropy)).toBe(true);
  expect(sparse.selected).toBe(full.selected);
  expect(Array.from(sparse.plausibleIds)).toEqual(Array.from(full.plausibleIds));
  const bytes = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  expect(bytes(sparse.plausibleLogpExpert)).toEqual(bytes(full.plausibleLogpExpert));
  expect(bytes(sparse.plausibleLogpAmateur)).toEqual(bytes(full.plausibleLogpAmateur));
  expect(bytes(sparse.targetWeights)).toEqual(bytes(full.targetWeights));
}

describe("SPARSE summary against FULL distributions", () => {
  it("gives bit-identical KL, selection, plausible ids and target weights", () => {
    const rng = new SeededRandom(2024);
    let selected = 0;
    let multiToken = 0;
    for (let trial = 0; trial < 200; trial++) {
      const logpExpert = logSoftmax(peakedLogits(rng, 1000));
      const logpAmateur = logSoftmax(peakedLogits(rng, 1000));
      const alpha = [0.2, 0.05, 0.5, 1][trial % 4];
      const beta = [0.4, 0, 2, 5][trial % 4];
      const summary = summarizeStep(logpExpert, logpAmateur, { alpha, topK: 8 });
      validateSparseStep(summary);
      const full = selectStep({ logpExpert, logpAmateur, alpha, beta });
      expectIdentical(selectFromSummary(summary, { beta }), full);
      if (full.selected) selected++;
      if (full.plausibleIds.length > 1) multiToken++;
    }
    // The trials must exercise both outcomes and non-trivial sets, or the test proves little.
    expect(selected).toBeGreaterThan(20);
    expect(selected).toBeLessThan(200);
    expect(multiToken).toBeGreaterThan(20);
  });

  it("narrows to a larger alpha exactly as FULL computes it", () => {
    const rng = new SeededRandom(99);
    for (let trial = 0; trial < 100; trial++) {
      const logpExpert = logSoftmax(peakedLogits(rng, 1000));
      const logpAmateur = logSoftmax(peakedLogits(rng, 1000));
      const summary = summarizeStep(logpExpert, logpAmateur, { alpha: 0.01, topK: 0 });
      for (const alpha of [0.01, 0.1, 0.2, 0.7, 1]) {
        expectIdentical(selectFromSummary(summary, { alpha, beta: 0.4 }), selectStep({ logpExpert, logpAmateur, alpha, beta: 0.4 }));
      }
    }
  });

  it("refuses to widen the set beyond the alpha it was cut at", () => {
    const logp = logSoftmax([3, 1, 0, -1]);
    const summary = summarizeStep(logp, logp, { alpha: 0.2, topK: 2 });
    expect(() => selectFromSummary(summary, { alpha: 0.1, beta: 0.4 })).toThrow(/^alpha: the summary was cut at alpha 0.2/);
  });
});

describe("summarizeStep", () => {
  it("carries top-k of both models with the mass left out", () => {
    // pE = [0.5, 0.3, 0.2] top-2: ids [0, 1], left out 0.2; pA = [0.2, 0.3, 0.5] top-2: [2, 1], left out 0.2.
    const logpExpert = Float32Array.from([0.5, 0.3, 0.2], Math.log);
    const logpAmateur = Float32Array.from([0.2, 0.3, 0.5], Math.log);
    const s = summarizeStep(logpExpert, logpAmateur, { alpha: 0.5, topK: 2 });
    expect(s.vocabSize).toBe(3);
    expect(Array.from(s.plausibleIds)).toEqual([0, 1]);
    expect(Array.from(s.expertTop.ids)).toEqual([0, 1]);
    expect(s.expertTop.restMass).toBeCloseTo(0.2, 6);
    expect(Array.from(s.amateurTop.ids)).toEqual([2, 1]);
    expect(s.amateurTop.restMass).toBeCloseTo(0.2, 6);
    expect(s.kl).toBeCloseTo(0.27488721956224654, 6);
  });
});

describe("summarizeStep's single pass", () => {
  it("equals the one-pass-per-quantity summary bit for bit, whatever k, ties, masked tokens or flat experts", () => {
    const rng = new SeededRandom(7);
    const bits = (x: number) => new Float64Array([x]);
    const bytes = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    for (let trial = 0; trial < 120; trial++) {
      const vocab = [8, 50, 1000, 200][trial % 4];
      const flat = trial % 5 === 0;
      const logits = () => (flat ? Float32Array.from({ length: vocab }, () => rng.normal() * 0.01) : peakedLogits(rng, vocab));
      const logpExpert = logSoftmax(logits());
      const logpAmateur = logSoftmax(logits());
      const options = { alpha: [0.2, 0.05, 1][trial % 3], topK: [0, 1, 4, 2000][trial % 4] };
      const fused = summarizeStep(logpExpert, logpAmateur, options);
      const passes = summarizeStepInPasses(logpExpert, logpAmateur, options);
      expect(bytes(bits(fused.kl))).toEqual(bytes(bits(passes.kl)));
      expect(bytes(bits(fused.expertEntropy))).toEqual(bytes(bits(passes.expertEntropy)));
      expect(Array.from(fused.plausibleIds)).toEqual(Array.from(passes.plausibleIds));
      for (const side of ["expertTop", "amateurTop"] as const) {
        expect(Array.from(fused[side].ids)).toEqual(Array.from(passes[side].ids));
        expect(bytes(fused[side].logp)).toEqual(bytes(passes[side].logp));
        expect(bytes(bits(fused[side].restMass))).toEqual(bytes(bits(passes[side].restMass)));
      }
    }
  });

  it("refuses a bad k or mismatched vocabularies as the separate functions do", () => {
    const logp = logSoftmax([1, 2, 3]);
    expect(() => summarizeStep(logp, logp, { alpha: 0.2, topK: -1 })).toThrow(/^k: must be a non-negative integer, got -1/);
    expect(() => summarizeStep(logp, logSoftmax([1, 2]), { alpha: 0.2, topK: 0 })).toThrow(/^logpAmateur: covers 2 tokens/);
  });
});

describe("validateSparseStep", () => {
  // Logits [4, 3, 2, 0] give pE proportional to [1, 0.368, 0.135, 0.018]: 3 tokens at alpha 0.1.
  const good = (): SparseStep => summarizeStep(logSoftmax([4, 3, 2, 0]), logSoftmax([0, 2, 3, 4]), { alpha: 0.1, topK: 2 });

  it("accepts what summarizeStep writes", () => {
    expect(() => validateSparseStep(good())).not.toThrow();
  });

  it("names the field that is wrong", () => {
    const outOfVocab = good();
    outOfVocab.plausibleIds[1] = 4;
    expect(() => validateSparseStep(outOfVocab, "step")).toThrow(/^step\.plausibleIds: entry 1 = 4 is outside the vocabulary \[0, 4\)/);
    const misordered = good();
    misordered.plausibleLogpExpert.reverse();
    expect(() => validateSparseStep(misordered)).toThrow(/^sparseStep\.plausibleIds: entry 1 breaks the order/);
    const short = good();
    short.plausibleLogpAmateur = short.plausibleLogpAmateur.subarray(1);
    expect(() => validateSparseStep(short)).toThrow(/^sparseStep\.plausibleLogpAmateur: has 2 entries for 3 plausible ids/);
    const badKl = good();
    badKl.kl = NaN;
    expect(() => validateSparseStep(badKl)).toThrow(/^sparseStep\.kl/);
    const badRest = good();
    badRest.amateurTop.restMass = -0.5;
    expect(() => validateSparseStep(badRest)).toThrow(/^sparseStep\.amateurTop\.restMass/);
  });
});
