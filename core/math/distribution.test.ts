import { describe, expect, it } from "vitest";
import { MethodInputError } from "./errors.ts";
import { PROBABILITY_SMOOTHING, entropy, klDivergence, logSoftmax, softmax, topK } from "./distribution.ts";
import { SeededRandom } from "./random.ts";

const logs = (probs: number[]): Float32Array => Float32Array.from(probs, (p) => Math.log(p));

describe("logSoftmax", () => {
  // logits [1, 2, 3]: logZ = 3 + ln(1 + e^-1 + e^-2) = 3 + ln(1.5032147244) = 3.4076059644443806
  // so log p = [1, 2, 3] - 3.4076059644 = [-2.4076059644, -1.4076059644, -0.4076059644].
  const expected = [-2.4076059644443806, -1.4076059644443806, -0.4076059644443806];

  it("matches the hand-computed values", () => {
    const out = logSoftmax([1, 2, 3]);
    expect(out).toBeInstanceOf(Float32Array);
    for (let i = 0; i < 3; i++) expect(out[i]).toBeCloseTo(expected[i], 6);
  });

  it("reads one row of a [batch, vocab] buffer through offset and length", () => {
    const out = logSoftmax(new Float32Array([9, 9, 1, 2, 3, 9]), 2, 3);
    expect(Array.from(out)).toEqual(Array.from(logSoftmax([1, 2, 3])));
  });

  it("is shift invariant and stable for huge logits", () => {
    const out = logSoftmax([1001, 1002, 1003]);
    for (let i = 0; i < 3; i++) expect(out[i]).toBeCloseTo(expected[i], 6);
  });

  it("keeps masked (-Infinity) logits at zero probability", () => {
    const out = logSoftmax([0, -Infinity, 0]);
    // two equal logits: ln(1/2) = -0.6931471805599453 each.
    expect(out[0]).toBeCloseTo(-0.6931471805599453, 6);
    expect(out[1]).toBe(-Infinity);
  });

  it("rejects NaN, +Infinity, all -Infinity and bad ranges by name", () => {
    expect(() => logSoftmax([0, NaN, 1])).toThrow(/logits: NaN at index 1/);
    expect(() => logSoftmax([NaN, 0])).toThrow(/logits: NaN at index 0/);
    expect(() => logSoftmax([0, Infinity])).toThrow(/\+Infinity/);
    expect(() => logSoftmax([-Infinity, -Infinity])).toThrow(/every logit is -Infinity/);
    expect(() => logSoftmax([1, 2], 1, 2)).toThrow(MethodInputError);
    expect(() => logSoftmax([1, 2], -1)).toThrow(/offset/);
  });

  it("normalises a 151,936-token vocabulary to 1 within float32 rounding", () => {
    const rng = new SeededRandom(7);
    const logits = Float32Array.from({ length: 151_936 }, () => rng.normal() * 4);
    const logp = logSoftmax(logits);
    let sum = 0;
    for (let i = 0; i < logp.length; i++) sum += Math.exp(logp[i]);
    expect(Math.abs(sum - 1)).toBeLessThan(1e-5);
  });
});

describe("entropy", () => {
  it("matches -sum p ln p by hand", () => {
    // -(0.5 ln 0.5 + 0.3 ln 0.3 + 0.2 ln 0.2) = 0.34657359 + 0.36119184 + 0.32188758 = 1.0296530140645737
    expect(entropy(logs([0.5, 0.3, 0.2]))).toBeCloseTo(1.0296530140645737, 6);
  });

  it("ignores zero-probability tokens and is ln V for a uniform distribution", () => {
    expect(entropy(new Float32Array([0, -Infinity]))).toBe(0);
    expect(entropy(logSoftmax(new Float32Array(1000)))).toBeCloseTo(Math.log(1000), 5);
  });
});

describe("klDivergence", () => {
  it("matches the hand-computed value", () => {
    // pE = [0.5, 0.3, 0.2], pA = [0.2, 0.3, 0.5]:
    // KL = 0.5 ln(0.5/0.2) + 0.3 ln(1) + 0.2 ln(0.2/0.5)
    //    = 0.5 * 0.91629073 + 0 + 0.2 * (-0.91629073)
    //    = 0.45814536593707755 - 0.183258146374831 = 0.27488721956224654
    // (the 1e-12 smoothing moves it by 1e-12-ish: python gives 0.2748872195613465 with it).
    expect(klDivergence(logs([0.5, 0.3, 0.2]), logs([0.2, 0.3, 0.5]))).toBeCloseTo(0.27488721956224654, 6);
  });

  it("is zero for identical distributions and positive otherwise", () => {
    const p = logs([0.1, 0.2, 0.7]);
    expect(klDivergence(p, p)).toBe(0);
    expect(klDivergence(p, logs([0.7, 0.2, 0.1]))).toBeGreaterThan(0);
  });

  it("stays finite when the amateur gives tokens exactly zero probability", () => {
    // pE = [0.5, 0.5, 0], pA = [1, 0, 0] (log pA = [0, -inf, -inf]); with eps = 1e-12:
    // token 0: 0.5 (ln(0.5 + eps) - ln(1 + eps)) = 0.5 ln 0.5 = -0.34657359
    // token 1: 0.5 (ln(0.5 + eps) - ln(eps))     = 0.5 (-0.69314718 + 27.63102112) = 13.46893697
    // token 2: pE = 0 contributes 0
    // KL = ln 0.5 - 0.5 ln 1e-12 = -0.6931471805599453 + 13.815510557964274 = 13.122363377404328
    expect(PROBABILITY_SMOOTHING).toBe(1e-12);
    const kl = klDivergence(new Float32Array([Math.log(0.5), Math.log(0.5), -Infinity]), new Float32Array([0, -Infinity, -Infinity]));
    expect(kl).toBeCloseTo(13.122363377404328, 6);
  });

  it("refuses distributions over different vocabularies", () => {
    expect(() => klDivergence(new Float32Array(3), new Float32Array(4))).toThrow(/logpAmateur: covers 4 tokens but logpExpert covers 3/);
  });
});

describe("topK", () => {
  // p = [0.1, 0.4, 0.05, 0.4, 0.05]; ties keep the lower id first.
  const p = logs([0.1, 0.4, 0.05, 0.4, 0.05]);

  it("returns ids by descending probability with the left-out mass", () => {
    const top2 = topK(p, 2);
    expect(Array.from(top2.ids)).toEqual([1, 3]);
    expect(Array.from(top2.logp)).toEqual([p[1], p[3]]);
    // left out: 0.1 + 0.05 + 0.05 = 0.2
    expect(top2.restMass).toBeCloseTo(0.2, 6);
    const top4 = topK(p, 4);
    expect(Array.from(top4.ids)).toEqual([1, 3, 0, 2]);
    expect(top4.restMass).toBeCloseTo(0.05, 6); // only token 4
  });

  it("handles k = 0 and k beyond the vocabulary", () => {
    expect(topK(p, 0).ids.length).toBe(0);
    expect(topK(p, 0).restMass).toBeCloseTo(1, 6);
    const all = topK(p, 10);
    expect(Array.from(all.ids)).toEqual([1, 3, 0, 2, 4]);
    expect(all.restMass).toBe(0);
    expect(() => topK(p, 1.5)).toThrow(/k: must be a non-negative integer/);
  });

  it("agrees with a full sort on a vocabulary with many ties", () => {
    const rng = new SeededRandom(3);
    // Values on a coarse grid so ties are everywhere.
    const logp = Float32Array.from({ length: 5000 }, () => -Math.round(rng.next() * 50) / 4);
    const sorted = Array.from(logp.keys()).sort((a, b) => logp[b] - logp[a] || a - b);
    for (const k of [1, 7, 64, 700]) {
      const top = topK(logp, k);
      expect(Array.from(top.ids)).toEqual(sorted.slice(0, k));
      let rest = 0;
      for (const id of sorted.slice(k)) rest += Math.exp(logp[id]);
      expect(top.restMass).toBeCloseTo(rest, 9);
    }
  });
});

describe("softmax over a set", () => {
  it("sums to 1 and takes the +Infinity limit", () => {
    // e^[ln 2.5, 0, ln 0.4] = [2.5, 1, 0.4] / 3.9
    const w = softmax([Math.log(2.5), 0, Math.log(0.4)]);
    expect(w[0]).toBeCloseTo(2.5 / 3.9, 12);
    expect(Array.from(softmax([1, Infinity, 3, Infinity]))).toEqual([0, 0.5, 0, 0.5]);
    expect(() => softmax([])).toThrow(/is empty/);
    expect(() => softmax([0, NaN])).toThrow(/NaN at index 1/);
  });
});

describe("speed on a Qwen2.5-size vocabulary (151,936)", () => {
  it("log-softmax, KL, entropy and top-k each take a few milliseconds", () => {
    const rng = new SeededRandom(11);
    const V = 151_936;
    const a = Float32Array.from({ length: V }, () => rng.normal() * 3);
    const b = Float32Array.from({ length: V }, () => rng.normal() * 3);
    const time = (f: () => unknown): number => {
      f(); // warm up the JIT
      const t0 = performance.now();
      for (let r = 0; r < 5; r++) f();
      return (performance.now() - t0) / 5;
    };
    const logpE = logSoftmax(a);
    const logpA = logSoftmax(b);
    const ms = {
      logSoftmax: time(() => logSoftmax(a)),
      klDivergence: time(() => klDivergence(logpE, logpA)),
      entropy: time(() => entropy(logpE)),
      topK20: time(() => topK(logpE, 20)),
    };
    console.log(`ms per call at V=${V}: ${JSON.stringify(ms)}`);
    // Generous bounds (a loaded 2-core CI runner); typical numbers are far lower.
    expect(ms.logSoftmax).toBeLessThan(50);
    expect(ms.klDivergence).toBeLessThan(100);
    expect(ms.topK20).toBeLessThan(50);
  });
});
