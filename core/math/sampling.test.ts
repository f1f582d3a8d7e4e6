import { describe, expect, it } from "vitest";
import { logSoftmax } from "./distribution.ts";
import { SeededRandom } from "./random.ts";
import { contrastiveTarget } from "./selection.ts";
import { argmaxToken, contrastiveChoice, sampleContrastiveToken, sampleToken } from "./sampling.ts";

const logs = (probs: number[]): Float32Array => Float32Array.from(probs, (p) => Math.log(p));

function frequencies(draw: () => number, size: number, n: number): number[] {
  const counts = new Array<number>(size).fill(0);
  for (let i = 0; i < n; i++) counts[draw()]++;
  return counts.map((c) => c / n);
}

describe("greedy", () => {
  it("takes the argmax, ties to the lowest id, and draws nothing from the rng", () => {
    const p = logs([0.1, 0.4, 0.1, 0.4]);
    expect(argmaxToken(p)).toBe(1);
    const rng = new SeededRandom(5);
    expect(sampleToken(p, { temperature: 0 }, rng)).toBe(1);
    expect(rng.next()).toBe(new SeededRandom(5).next());
  });
});

describe("sampleToken", () => {
  const p = logs([0.5, 0.3, 0.2]);

  it("is deterministic given the seed and draws exactly one float per token", () => {
    const a = new SeededRandom(17);
    const b = new SeededRandom(17);
    const seqA = Array.from({ length: 50 }, () => sampleToken(p, { temperature: 1, topP: 0.9 }, a));
    const seqB = Array.from({ length: 50 }, () => sampleToken(p, { temperature: 1, topP: 0.9 }, b));
    expect(seqA).toEqual(seqB);
    const c = new SeededRandom(17);
    for (let i = 0; i < 50; i++) c.next();
    expect(a.next()).toBe(c.next());
  });

  it("follows the distribution at temperature 1", () => {
    const rng = new SeededRandom(1);
    const f = frequencies(() => sampleToken(p, { temperature: 1 }, rng), 3, 20_000);
    // Standard error at n = 20,000 is at most 0.0035; 0.015 is over 4 of them.
    [0.5, 0.3, 0.2].forEach((q, i) => expect(Math.abs(f[i] - q)).toBeLessThan(0.015));
  });

  it("flattens by the temperature", () => {
    // T = 2: p^(1/2) = [0.70710678, 0.54772256, 0.44721360], sum 1.70204294
    // -> [0.41544591, 0.32180302, 0.26275107].
    const rng = new SeededRandom(2);
    const f = frequencies(() => sampleToken(p, { temperature: 2 }, rng), 3, 20_000);
    [0.41544591, 0.32180302, 0.26275107].forEach((q, i) => expect(Math.abs(f[i] - q)).toBeLessThan(0.015));
  });

  it("keeps the smallest top-p nucleus and renormalises inside it", () => {
    // topP 0.7: 0.5 < 0.7, 0.5 + 0.3 = 0.8 >= 0.7, so the nucleus is {0, 1} with [0.625, 0.375].
    const rng = new SeededRandom(3);
    const f = frequencies(() => sampleToken(p, { temperature: 1, topP: 0.7 }, rng), 3, 20_000);
    expect(f[2]).toBe(0);
    expect(Math.abs(f[0] - 0.625)).toBeLessThan(0.015);
    // topP 0.4: the first token alone reaches it.
    const g = frequencies(() => sampleToken(p, { temperature: 1, topP: 0.4 }, rng), 3, 1000);
    expect(g[0]).toBe(1);
  });

  it("agrees with a nucleus found by sorting, on random vocabularies", () => {
    const rng = new SeededRandom(12);
    for (let trial = 0; trial < 20; trial++) {
      const logp = logSoftmax(Float32Array.from({ length: 30 }, () => rng.normal() * 2));
      const topP = 0.3 + rng.next() * 0.6;
      const order = Array.from(logp.keys()).sort((a, b) => logp[b] - logp[a] || a - b);
      let total = 0;
      for (const x of logp) total += Math.exp(x);
      let cumulative = 0;
      let size = 0;
      while (cumulative < topP * total) cumulative += Math.exp(logp[order[size++]]);
      const inside = new Set(order.slice(0, size));
      const seen = new Set<number>();
      for (let i = 0; i < 3000; i++) seen.add(sampleToken(logp, { temperature: 1, topP }, rng));
      for (const id of seen) expect(inside.has(id)).toBe(true);
      // Every nucleus token with at least 1% of the nucleus mass shows up in 3000 draws.
      for (const id of inside) if (Math.exp(logp[id]) > 0.01 * cumulative) expect(seen.has(id)).toBe(true);
    }
  });

  it("cuts a tie group at the nucleus edge by lowest id", () => {
    // Five tokens at 0.2 each, topP 0.5: 0.2, 0.4 < 0.5, 0.6 >= 0.5, so the nucleus is ids {0, 1, 2}.
    const rng = new SeededRandom(6);
    const f = frequencies(() => sampleToken(logSoftmax(new Float32Array(5)), { temperature: 1, topP: 0.5 }, rng), 5, 6000);
    expect(f[3] + f[4]).toBe(0);
    for (const id of [0, 1, 2]) expect(Math.abs(f[id] - 1 / 3)).toBeLessThan(0.03);
  });

  it("finds a nucleus of many thousand tokens in a 151,936-token vocabulary quickly", () => {
    // A flat-ish distribution: the 0.9 nucleus holds thousands of tokens, more than 64.
    const rng = new SeededRandom(4);
    const logp = logSoftmax(Float32Array.from({ length: 151_936 }, () => rng.normal() * 0.5));
    const order = Array.from(logp.keys()).sort((a, b) => logp[b] - logp[a] || a - b);
    let cumulative = 0;
    let size = 0;
    while (cumulative < 0.9) cumulative += Math.exp(logp[order[size++]]);
    const inside = new Set(order.slice(0, size));
    expect(size).toBeGreaterThan(10_000);
    const t0 = performance.now();
    for (let i = 0; i < 200; i++) expect(inside.has(sampleToken(logp, { temperature: 1, topP: 0.9 }, rng))).toBe(true);
    const ms = (performance.now() - t0) / 200;
    console.log(`top-p 0.9 sample over 151,936 tokens with a ${size}-token nucleus: ${ms.toFixed(2)} ms`);
    expect(ms).toBeLessThan(100);
  });

  it("rejects bad options by name", () => {
    const rng = new SeededRandom(0);
    expect(() => sampleToken(p, { temperature: -1 }, rng)).toThrow(/^temperature:/);
    expect(() => sampleToken(p, { temperature: 1, topP: 0 }, rng)).toThrow(/^topP:/);
    expect(() => sampleToken(p, { temperature: 1, topP: 1.5 }, rng)).toThrow(/^topP:/);
  });
});

describe("contrastive decoding", () => {
  // pE = [0.55, 0.4, 0.05], pA = [0.7, 0.2999, 0.0001]. At alpha 0.2 the threshold is 0.11,
  // so the set is {0, 1}; ratios pE/pA = [0.786, 1.334] pick token 1, although token 2's
  // ratio (500) is far larger: the plausibility mask keeps it out.
  const pE = logs([0.55, 0.4, 0.05]);
  const pA = logs([0.7, 0.2999, 0.0001]);

  it("takes the argmax of log pE - log pA over the plausible set", () => {
    expect(contrastiveChoice(pE, pA, 0.2)).toBe(1);
    // At alpha 0.05 (threshold 0.0275) token 2 becomes plausible and wins.
    expect(contrastiveChoice(pE, pA, 0.05)).toBe(2);
    // At alpha 1 only the expert's favourite remains.
    expect(contrastiveChoice(pE, pA, 1)).toBe(0);
  });

  it("samples v_C at temperature 1 and is greedy at 0", () => {
    // v_C on {0, 1} = [0.786, 1.334] / 2.120 = [0.3707, 0.6293].
    const target = contrastiveTarget(new Float32Array([pE[0], pE[1]]), new Float32Array([pA[0], pA[1]]));
    expect(target[1]).toBeCloseTo(0.6293, 3);
    const rng = new SeededRandom(8);
    const f = frequencies(() => sampleContrastiveToken(pE, pA, { alpha: 0.2, temperature: 1 }, rng), 3, 20_000);
    expect(f[2]).toBe(0);
    expect(Math.abs(f[1] - target[1])).toBeLessThan(0.015);
    expect(sampleContrastiveToken(pE, pA, { alpha: 0.2, temperature: 0 }, rng)).toBe(1);
  });

  it("validates alpha and the shared vocabulary", () => {
    expect(() => contrastiveChoice(pE, pA, 0)).toThrow(/^alpha:/);
    expect(() => contrastiveChoice(pE, new Float32Array(2), 0.2)).toThrow(/^logpAmateur:/);
  });
});
