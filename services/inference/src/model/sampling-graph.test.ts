import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { logSoftmax } from "#core/math/distribution.ts";
import { SeededRandom } from "#core/math/random.ts";
import { sampleToken } from "#core/math/sampling.ts";
import { type DrawnBy, NUCLEUS_CANDIDATES, SamplingGraph } from "./sampling-graph.ts";

/** core/math's draw for a given u. */
const exactDraw = (logp: Float32Array, temperature: number, u: number, topP = 1) => sampleToken(logp, { temperature, topP }, { next: () => u });

/** Draws each way since the graph opened. */
function drawCounter(): { drawn: (by: DrawnBy) => void; coreMath: () => number } {
  let coreMath = 0;
  return { drawn: (by) => void (by === "core_math" && coreMath++), coreMath: () => coreMath };
}

describe("sampling on ONNX Runtime, a small vocabulary", () => {
  let graph: SamplingGraph;
  const counter = drawCounter();
  const draws = (logp: Float32Array, temperature: number, us: number[], topP = 1) => Promise.all(us.map((u) => graph.sample(logp, { temperature, topP }, u)));
  // p = (1/8, 1/2, 1/8, 1/4) at temperature 1: running weight in id order 0.125, 0.625, 0.75, 1.
  const row = Float32Array.from([0.125, 0.5, 0.125, 0.25], Math.log);
  beforeAll(async () => {
    graph = await SamplingGraph.open(4, { executionProvider: "cpu" }, counter.drawn);
  });
  afterAll(() => graph?.release());

  it("draws by running weight in id order, as worked out by hand", async () => {
    expect(await draws(row, 1, [0, 0.12, 0.13, 0.62, 0.63, 0.74, 0.76, 0.999])).toEqual([0, 0, 1, 1, 2, 2, 3, 3]);
  });

  it("sharpens with a low temperature: at T = 1/2 the weights are p^2, (1/64, 16/64, 1/64, 4/64) over 22/64", async () => {
    // Running shares 1/22, 17/22, 18/22, 1.
    expect(await draws(row, 0.5, [0.04, 0.05, 0.77, 0.78, 0.81, 0.82])).toEqual([0, 1, 1, 2, 2, 3]);
  });

  it("draws from the nucleus only, in id order: top-p 0.7 keeps tokens 1 and 3 (1/2 + 1/4)", async () => {
    // Renormalized over the nucleus: token 1 has 2/3, token 3 the rest.
    expect(await draws(row, 1, [0, 0.66, 0.67, 0.999], 0.7)).toEqual([1, 1, 3, 3]);
    // Top-p 0.5 is reached by token 1 alone.
    expect(await draws(row, 1, [0, 0.5, 0.999], 0.5)).toEqual([1, 1, 1]);
  });

  it("takes equal tokens into the nucleus by lower id first", async () => {
    // (0.25, 0.25, 0.25, 0.25): top-p 0.5 keeps ids 0 and 1.
    const flat = Float32Array.from([0.25, 0.25, 0.25, 0.25], Math.log);
    expect(await draws(flat, 1, [0.1, 0.49, 0.51, 0.9], 0.5)).toEqual([0, 0, 1, 1]);
  });

  it("never draws a masked token", async () => {
    const logp = Float32Array.from([-Infinity, Math.log(0.5), -Infinity, Math.log(0.5)]);
    expect(await draws(logp, 0.8, [0, 0.25, 0.49, 0.51, 0.99])).toEqual([1, 1, 1, 3, 3]);
    expect(await draws(logp, 0.8, [0, 0.49, 0.51, 0.99], 0.9)).toEqual([1, 1, 3, 3]);
  });

  it("takes core/math's way for a row its sums cannot handle", async () => {
    const nan = Float32Array.from([0, Number.NaN, -1, -2]);
    const before = counter.coreMath();
    expect(await graph.sample(nan, { temperature: 1 }, 0.3)).toBe(exactDraw(nan, 1, 0.3));
    expect(await graph.sample(nan, { temperature: 1, topP: 0.5 }, 0.3)).toBe(exactDraw(nan, 1, 0.3, 0.5));
    expect(counter.coreMath() - before).toBe(2);
  });

  it("refuses what sampleToken would not draw from", async () => {
    const logp = new Float32Array(4);
    await expect(graph.sample(logp, { temperature: 0 }, 0.5)).rejects.toThrow(/temperature/);
    await expect(graph.sample(logp, { temperature: Number.POSITIVE_INFINITY }, 0.5)).rejects.toThrow(/temperature/);
    await expect(graph.sample(logp, { temperature: 1, topP: 0 }, 0.5)).rejects.toThrow(/topP/);
    await expect(graph.sample(logp, { temperature: 1 }, 1)).rejects.toThrow(/u/);
    await expect(graph.sample(new Float32Array(5), { temperature: 1 }, 0.5)).rejects.toThrow(/covers 5 tokens/);
  });
});

describe("sampling on ONNX Runtime, vocabulary 151,936", () => {
  const vocab = 151_936;
  let graph: SamplingGraph;
  const counter = drawCounter();
  beforeAll(async () => {
    graph = await SamplingGraph.open(vocab, { executionProvider: "cpu" }, counter.drawn);
  });
  afterAll(() => graph?.release());

  it("draws core/math's token for peaked and flat rows, four temperatures, three top-p, 24 draws each (864)", async () => {
    const rng = new SeededRandom(41);
    let draws = 0;
    const coreMath = new Map<string, number>();
    for (const spread of [2, 5, 12]) {
      // Logits with a long tail; spread 12 gives a peaked row, 5 a middling one and 2 a nearly
      // flat one (whose nuclei outgrow the candidates and take core/math's way).
      const logp = logSoftmax(Float32Array.from({ length: vocab }, () => rng.normal() * spread));
      for (const temperature of [0.3, 0.7, 1, 1.5]) {
        for (const topP of [1, 0.95, 0.5]) {
          for (let i = 0; i < 24; i++) {
            const u = rng.next();
            const before = counter.coreMath();
            expect(await graph.sample(logp, { temperature, topP }, u), `spread ${spread}, T ${temperature}, top-p ${topP}, u ${u}`).toBe(exactDraw(logp, temperature, u, topP));
            const key = `spread ${spread}, top-p ${topP}`;
            coreMath.set(key, (coreMath.get(key) ?? 0) + counter.coreMath() - before);
            draws++;
          }
        }
      }
    }
    expect(draws).toBe(864);
    // The graph drew every whole-vocabulary token and the nuclei of up to 256 tokens; the flat
    // row's nuclei above temperature 0.3 and the middling row's widest, thousands of tokens, went to core/math.
    expect(Object.fromEntries(coreMath)).toEqual({ "spread 2, top-p 1": 0, "spread 2, top-p 0.95": 72, "spread 2, top-p 0.5": 72, "spread 5, top-p 1": 0, "spread 5, top-p 0.95": 24, "spread 5, top-p 0.5": 0, "spread 12, top-p 1": 0, "spread 12, top-p 0.95": 0, "spread 12, top-p 0.5": 0 });
  });

  it("hands a nucleus one token wider than the candidates to core/math", async () => {
    const logp = new Float32Array(vocab).fill(-60);
    for (let i = 0; i <= NUCLEUS_CANDIDATES; i++) logp[1_000 + i * 37] = -Math.log(NUCLEUS_CANDIDATES + 1);
    const before = counter.coreMath();
    for (const u of [0, 0.3, 0.999]) expect(await graph.sample(logp, { temperature: 1, topP: 0.9999 }, u)).toBe(exactDraw(logp, 1, u, 0.9999));
    expect(counter.coreMath() - before).toBe(3);
  });

  it("finds a nucleus of exactly NUCLEUS_CANDIDATES tokens among the candidates", async () => {
    // NUCLEUS_CANDIDATES equal tokens hold almost all the mass; top-p 0.999 needs every one.
    const logp = new Float32Array(vocab).fill(-60);
    for (let i = 0; i < NUCLEUS_CANDIDATES; i++) logp[1_000 + i * 37] = -Math.log(NUCLEUS_CANDIDATES);
    const before = counter.coreMath();
    for (const u of [0, 0.3, 0.999]) expect(await graph.sample(logp, { temperature: 1, topP: 0.999 }, u)).toBe(exactDraw(logp, 1, u, 0.999));
    expect(counter.coreMath()).toBe(before);
  });
});
