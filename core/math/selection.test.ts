import { describe, expect, it } from "vitest";
import { MethodInputError } from "./errors.ts";
import { logSoftmax } from "./distribution.ts";
import {
  CONTRASTIVE_SMOOTHING,
  contrastiveScores,
  contrastiveTarget,
  isSelected,
  plausibleSet,
  selectStep,
  stepLabel,
  validateAlpha,
  validateBeta,
} from "./selection.ts";

const logs = (probs: number[]): Float32Array => Float32Array.from(probs, (p) => Math.log(p));
const sum = (xs: ArrayLike<number>): number => Array.from(xs).reduce((a, b) => a + b, 0);

describe("plausibleSet", () => {
  const pE = logs([0.2, 0.5, 0.3]);

  it("keeps tokens with pE >= alpha * max pE, most probable first", () => {
    // max = 0.5; alpha 0.2 -> threshold 0.1: all three; alpha 0.5 -> 0.25: {1 (0.5), 2 (0.3)}.
    expect(Array.from(plausibleSet(pE, 0.2))).toEqual([1, 2, 0]);
    expect(Array.from(plausibleSet(pE, 0.5))).toEqual([1, 2]);
    expect(Array.from(plausibleSet(pE, 1))).toEqual([1]);
  });

  it("can hold exactly one token", () => {
    // max = 0.9, threshold 0.18 at alpha 0.2: both 0.05 tokens fall out.
    expect(Array.from(plausibleSet(logs([0.05, 0.9, 0.05]), 0.2))).toEqual([1]);
  });

  it("includes a token exactly at alpha * max", () => {
    // The test is logp(a) - max logp >= ln(alpha). With log-probs -0.5 (max) and -2.0 the
    // difference is exactly -1.5, and alpha = e^-1.5 has Math.log(alpha) === -1.5 exactly,
    // so token 1 sits on the boundary; the next float32 below -2.0 falls outside.
    const alpha = Math.exp(-1.5);
    expect(Math.log(alpha)).toBe(-1.5);
    const below = Math.fround(-2 - 2 ** -22);
    expect(below).toBeLessThan(-2);
    expect(Array.from(plausibleSet(new Float32Array([-0.5, -2.0, below]), alpha))).toEqual([0, 1]);
  });

  it("breaks ties by lower id and keeps every tied maximum at alpha = 1", () => {
    expect(Array.from(plausibleSet(logs([0.1, 0.4, 0.1, 0.4]), 1))).toEqual([1, 3]);
    // alpha 0.2: threshold 0.08, every token in (not 0.25: 0.1 = 0.25 * 0.4 would test float32 rounding).
    expect(Array.from(plausibleSet(logs([0.1, 0.4, 0.1, 0.4]), 0.2))).toEqual([1, 3, 0, 2]);
  });

  it("is bounded by 1 / (alpha * max pE), not by 1 / alpha", () => {
    // A flat expert over 10 tokens: every token has pE = max, so all 10 are plausible at alpha 0.2
    // (1 / (0.2 * 0.1) = 50 >= 10); "at most 5" holds only as max pE approaches 1.
    expect(plausibleSet(logSoftmax(new Float32Array(10)), 0.2).length).toBe(10);
  });

  it("rejects alpha outside (0, 1] by name", () => {
    for (const bad of [0, -0.1, 1.01, NaN, Infinity]) {
      expect(() => plausibleSet(pE, bad)).toThrow(MethodInputError);
      expect(() => validateAlpha(bad)).toThrow(/^alpha: must be a number in \(0, 1\]/);
    }
    expect(() => plausibleSet(pE, 0.2)).not.toThrow();
  });
});

describe("contrastiveTarget", () => {
  it("is the softmax of log pE - log pA over the set (hand values)", () => {
    // pE = [0.5, 0.3, 0.2], pA = [0.2, 0.3, 0.5] on the set:
    // scores = [ln 2.5, ln 1, ln 0.4]; e^scores = [2.5, 1, 0.4], sum 3.9
    // v_C = [2.5/3.9, 1/3.9, 0.4/3.9] = [25/39, 10/39, 4/39] = [0.64102564, 0.25641026, 0.10256410]
    const w = contrastiveTarget(logs([0.5, 0.3, 0.2]), logs([0.2, 0.3, 0.5]));
    expect(w[0]).toBeCloseTo(25 / 39, 7);
    expect(w[1]).toBeCloseTo(10 / 39, 7);
    expect(w[2]).toBeCloseTo(4 / 39, 7);
    expect(sum(w)).toBeCloseTo(1, 15);
  });

  it("sums to 1 on random sets", () => {
    for (let n = 1; n <= 8; n++) {
      const lE = Float32Array.from({ length: n }, (_, j) => -0.1 - j * 0.3);
      const lA = Float32Array.from({ length: n }, (_, j) => -5 + ((j * 7) % 5));
      expect(Math.abs(sum(contrastiveTarget(lE, lA)) - 1)).toBeLessThan(1e-15);
    }
  });

  it("smooths by default: a token the amateur rules out gets finite score, not all weight by fiat", () => {
    // On the set pE = [0.6, 0.4], pA = [0, 0.5]; eps = 1e-12:
    // s0 = ln(0.6 + eps) - ln(eps) = -0.51082562 + 27.63102112 = 27.120195492164225
    // s1 = ln(0.4 / 0.5)                                      = -0.22314355131370978
    // w1 = e^(s1 - s0) / (1 + e^(s1 - s0)) = (0.8 * 1e-12 / 0.6) ~ 1.3333333333e-12
    expect(CONTRASTIVE_SMOOTHING).toBe(1e-12);
    const lE = logs([0.6, 0.4]);
    const lA = new Float32Array([-Infinity, Math.log(0.5)]);
    const scores = contrastiveScores(lE, lA);
    expect(scores[0]).toBeCloseTo(27.120195492164225, 6);
    expect(scores[1]).toBeCloseTo(-0.22314355131370978, 6);
    const w = contrastiveTarget(lE, lA);
    expect(w[1]).toBeGreaterThan(1.33e-12);
    expect(w[1]).toBeLessThan(1.34e-12);
    expect(w[0] + w[1]).toBe(1);
    // Raw log-ratios (smoothing 0): the +Infinity score takes the limit, all weight.
    expect(Array.from(contrastiveTarget(lE, lA, 0))).toEqual([1, 0]);
  });

  it("without smoothing is the plain softmax of log-ratios", () => {
    const w = contrastiveTarget(logs([0.5, 0.3]), logs([0.2, 0.3]), 0);
    // [2.5, 1] / 3.5 = [5/7, 2/7]
    expect(w[0]).toBeCloseTo(5 / 7, 7);
  });

  it("rejects empty sets, mismatched lengths and non-plausible expert entries", () => {
    expect(() => contrastiveTarget(new Float32Array(0), new Float32Array(0))).toThrow(/plausible set is empty/);
    expect(() => contrastiveTarget(new Float32Array(2), new Float32Array(3))).toThrow(/logpAmateurOnSet: has 3 entries/);
    expect(() => contrastiveTarget(new Float32Array([-Infinity]), new Float32Array([0]))).toThrow(/logpExpertOnSet: entry 0/);
  });
});

describe("isSelected", () => {
  it("is a strict inequality KL > beta", () => {
    expect(isSelected(0.4, 0.4)).toBe(false);
    expect(isSelected(0.4000001, 0.4)).toBe(true);
    expect(isSelected(0.3999999, 0.4)).toBe(false);
    expect(isSelected(0, 0)).toBe(false);
  });

  it("rejects bad beta and NaN KL by name", () => {
    for (const bad of [-0.1, NaN, Infinity]) expect(() => validateBeta(bad)).toThrow(/^beta: must be a finite number >= 0/);
    expect(() => isSelected(NaN, 0.4)).toThrow(/^kl:/);
  });
});

describe("selectStep", () => {
  // pE = [0.5, 0.3, 0.2], pA = [0.2, 0.3, 0.5]: KL = 0.27488721956224654 (see distribution.test.ts),
  // entropy 1.0296530140645737. At alpha 0.5 the set is {0, 1} (threshold 0.25) and
  // v_C = softmax([ln 2.5, 0]) = [2.5, 1] / 3.5 = [5/7, 2/7] = [0.71428571, 0.28571429].
  const logpExpert = logs([0.5, 0.3, 0.2]);
  const logpAmateur = logs([0.2, 0.3, 0.5]);

  it("gives every stage-1 quantity of the step", () => {
    const step = selectStep({ logpExpert, logpAmateur, alpha: 0.5, beta: 0.2 });
    expect(step.kl).toBeCloseTo(0.27488721956224654, 6);
    expect(step.entropy).toBeCloseTo(1.0296530140645737, 6);
    expect(step.selected).toBe(true);
    expect(Array.from(step.plausibleIds)).toEqual([0, 1]);
    expect(Array.from(step.plausibleLogpExpert)).toEqual([logpExpert[0], logpExpert[1]]);
    expect(Array.from(step.plausibleLogpAmateur)).toEqual([logpAmateur[0], logpAmateur[1]]);
    expect(step.targetWeights[0]).toBeCloseTo(5 / 7, 7);
    expect(step.targetWeights[1]).toBeCloseTo(2 / 7, 7);
  });

  it("rejects the step when KL is not above beta, still reporting its target", () => {
    const step = selectStep({ logpExpert, logpAmateur, alpha: 0.5, beta: 0.3 });
    expect(step.selected).toBe(false);
    expect(step.targetWeights.length).toBe(2);
  });

  it("validates alpha, beta and the vocabulary before computing", () => {
    expect(() => selectStep({ logpExpert, logpAmateur, alpha: 0, beta: 0.4 })).toThrow(/^alpha:/);
    expect(() => selectStep({ logpExpert, logpAmateur, alpha: 0.2, beta: -1 })).toThrow(/^beta:/);
    expect(() => selectStep({ logpExpert, logpAmateur: new Float32Array(4), alpha: 0.2, beta: 0.4 })).toThrow(/^logpAmateur:/);
  });
});

describe("stepLabel", () => {
  // pE = (0.05, 0.5, 0.45), pA = (0.1, 0.8, 0.1), alpha 0.2: the set is {1, 2} (pE >= 0.1),
  // most probable first. The contrast favours token 2 (0.45 / 0.1), the expert's argmax is 1.
  const selection = selectStep({ logpExpert: logs([0.05, 0.5, 0.45]), logpAmateur: logs([0.1, 0.8, 0.1]), alpha: 0.2, beta: 0 });

  it("is the contrastive soft label as selectStep gives it", () => {
    const label = stepLabel(selection, "contrastive");
    expect(Array.from(label.ids)).toEqual([1, 2]);
    expect(label.weights).toBe(selection.targetWeights);
    // Weights pE/pA normalised: 0.625 and 4.5 over 5.125 (to the float32 log-probabilities' rounding).
    expect(label.weights[0]).toBeCloseTo(0.625 / 5.125, 6);
    expect(label.weights[1]).toBeCloseTo(4.5 / 5.125, 6);
  });

  it("puts all weight on the expert's most probable token for the argmax ablation", () => {
    const label = stepLabel(selection, "expert_argmax");
    expect(Array.from(label.ids)).toEqual([1]);
    expect(Array.from(label.weights)).toEqual([1]);
  });

  it("breaks a tie between equally probable tokens toward the lower id", () => {
    const tied = selectStep({ logpExpert: logs([0.2, 0.4, 0.4]), logpAmateur: logs([0.3, 0.3, 0.4]), alpha: 0.5, beta: 0 });
    expect(Array.from(stepLabel(tied, "expert_argmax").ids)).toEqual([1]);
  });
});
