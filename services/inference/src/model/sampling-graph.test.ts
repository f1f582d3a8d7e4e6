import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { logSoftmax } from "#core/math/distribution.ts";
import { SeededRandom } from "#core/math/random.ts";
import { sampleToken } from "#core/math/sampling.ts";
import { TemperatureSamplingGraph } from "./sampling-graph.ts";

/** core/math's draw for a given u. */
const exactDraw = (logp: Float32Array, temperature: number, u: number) => sampleToken(logp, { temperature }, { next: () => u });

describe("temperature sampling on ONNX Runtime, a small vocabulary", () => {
  let graph: TemperatureSamplingGraph;
  beforeAll(async () => {
    graph = await TemperatureSamplingGraph.open(4, { executionProvider: "cpu" });
  });
  afterAll(() => graph?.release());

  it("draws by cumulative weight in id order, as worked out by hand", async () => {
    // p = (1/2, 1/4, 1/8, 1/8) at temperature 1: cumulative 0.5, 0.75, 0.875, 1.
    const logp = Float32Array.from([0.5, 0.25, 0.125, 0.125], Math.log);
    const tokens = await Promise.all([0, 0.49, 0.51, 0.74, 0.76, 0.86, 0.88, 0.999].map((u) => graph.sample(logp, 1, u)));
    expect(tokens).toEqual([0, 0, 1, 1, 2, 2, 3, 3]);
  });

  it("sharpens with a low temperature: at T = 1/2 the weights are p^2, (1/4, 1/16, 1/64, 1/64) over 22/64", async () => {
    const logp = Float32Array.from([0.5, 0.25, 0.125, 0.125], Math.log);
    // Cumulative shares 16/22, 20/22, 21/22, 1.
    const tokens = await Promise.all([0.7, 0.74, 0.9, 0.92, 0.95, 0.96].map((u) => graph.sample(logp, 0.5, u)));
    expect(tokens).toEqual([0, 1, 1, 2, 2, 3]);
  });

  it("never draws a masked token", async () => {
    const logp = Float32Array.from([-Infinity, Math.log(0.5), -Infinity, Math.log(0.5)]);
    const tokens = await Promise.all([0, 0.25, 0.49, 0.51, 0.99].map((u) => graph.sample(logp, 0.8, u)));
    expect(tokens).toEqual([1, 1, 1, 3, 3]);
  });

  it("takes core/math's way for a row its sums cannot handle", async () => {
    const nan = Float32Array.from([0, Number.NaN, -1, -2]);
    expect(await graph.sample(nan, 1, 0.3)).toBe(exactDraw(nan, 1, 0.3));
  });

  it("refuses what sampleToken would not draw from", async () => {
    const logp = new Float32Array(4);
    await expect(graph.sample(logp, 0, 0.5)).rejects.toThrow(/temperature/);
    await expect(graph.sample(logp, Number.POSITIVE_INFINITY, 0.5)).rejects.toThrow(/temperature/);
    await expect(graph.sample(logp, 1, 1)).rejects.toThrow(/u/);
    await expect(graph.sample(new Float32Array(5), 1, 0.5)).rejects.toThrow(/covers 5 tokens/);
  });
});

describe("temperature sampling on ONNX Runtime, vocabulary 151,936", () => {
  const vocab = 151_936;
  let graph: TemperatureSamplingGraph;
  beforeAll(async () => {
    graph = await TemperatureSamplingGraph.open(vocab, { executionProvider: "cpu" });
  });
  afterAll(() => graph?.release());

  it("draws core/math's token for peaked and flat rows, four temperatures, 64 draws each", async () => {
    const rng = new SeededRandom(41);
    let draws = 0;
    for (const spread of [2, 12]) {
      // Logits with a long tail; spread 12 gives a peaked row, 2 a nearly flat one.
      const logits = Float32Array.from({ length: vocab }, () => rng.normal() * spread);
      const logp = logSoftmax(logits);
      for (const temperature of [0.3, 0.7, 1, 1.5]) {
        for (let i = 0; i < 64; i++) {
          const u = rng.next();
          expect(await graph.sample(logp, temperature, u), `spread ${spread}, T ${temperature}, u ${u}`).toBe(exactDraw(logp, temperature, u));
          draws++;
        }
      }
    }
    expect(draws).toBe(512);
  });
});
