import { describe, expect, it } from "vitest";
import { ModelFormatError } from "#core/model/errors.ts";
import { logSoftmax } from "#core/math/distribution.ts";
import { encodeInline } from "#core/formats/onnx-file.ts";
import { buildOnnxModel } from "./export.ts";
import type { GraphOptions } from "./onnx-graph.ts";
import { buildCausalLmGraph } from "./onnx-graph.ts";
import { CausalLmSession } from "./session.ts";
import { randomWeights, tinyConfig } from "./testing/random-model.ts";
import { referenceLogits } from "#core/model/testing/reference-forward.ts";
import { flat, logSoftmaxRows, maxAbsDiff } from "./testing/compare.ts";

const TOKENS = [5, 17, 42, 0, 63, 9, 9, 31];

const variants = [
  { name: "llama, GQA 4/2, untied", config: tinyConfig("llama") },
  { name: "llama, tied, attention_bias, MHA", config: tinyConfig("llama", { tie_word_embeddings: true, attention_bias: true, num_key_value_heads: 4 }) },
  { name: "llama, multi-query (1 KV head), rope_theta 500000", config: tinyConfig("llama", { num_key_value_heads: 1, rope_theta: 500000 }) },
  { name: "qwen2, q/k/v biases, untied", config: tinyConfig("qwen2", { rms_norm_eps: 1e-5 }) },
  { name: "qwen2, tied, head_dim 12 != hidden/heads", config: tinyConfig("qwen2", { tie_word_embeddings: true, head_dim: 12, rope_theta: 1e6 }) },
];

describe("ONNX graph vs a float64 reference forward", () => {
  for (const [i, { name, config }] of variants.entries()) {
    it(name, async () => {
      const weights = randomWeights(config, 100 + i);
      const session = await CausalLmSession.open(buildOnnxModel(config, weights), { executionProvider: "cpu" });
      expect(session.io).toMatchObject({ numLayers: config.numLayers, numKvHeads: config.numKvHeads, headDim: config.headDim, kvType: "float32", logitsType: "float32", vocabSize: config.vocabSize });
      const [result] = await session.step([{ cache: session.newCache(), tokens: TOKENS, allPositions: true }]);
      const reference = referenceLogits(config, weights, TOKENS);
      expect(maxAbsDiff(result.positionLogProbs!, logSoftmaxRows(flat(reference), config.vocabSize))).toBeLessThan(1e-4);
      // The logits must vary, or the comparison proves little.
      expect(Math.max(...reference.at(-1)!) - Math.min(...reference.at(-1)!)).toBeGreaterThan(1);
      expect(maxAbsDiff(result.logProbs, logSoftmax(reference.at(-1)!))).toBeLessThan(1e-4);
      await session.release();
    });
  }

  it("a different weight changes the logits (the comparison can fail)", async () => {
    const config = variants[0].config;
    const weights = randomWeights(config, 7);
    const other = new Map(weights);
    const q = weights.get("model.layers.1.self_attn.q_proj.weight")!;
    const data = Float32Array.from(q.data);
    data[3] += 0.5;
    other.set("model.layers.1.self_attn.q_proj.weight", { shape: q.shape, data });
    const session = await CausalLmSession.open(buildOnnxModel(config, other), { executionProvider: "cpu" });
    const [result] = await session.step([{ cache: session.newCache(), tokens: TOKENS, allPositions: true }]);
    expect(maxAbsDiff(result.positionLogProbs!, logSoftmaxRows(flat(referenceLogits(config, weights, TOKENS)), config.vocabSize))).toBeGreaterThan(1e-3);
  });
});

describe("distribution outputs", () => {
  const config = tinyConfig("qwen2");
  const weights = randomWeights(config, 5);
  const distributionOutputs = (options: GraphOptions) =>
    buildCausalLmGraph(config, weights, "weights", options)
      .outputs.map((o) => o.name)
      .filter((name) => !name?.startsWith("new_key_values."));
  const open = (bytes: Uint8Array) => CausalLmSession.open(bytes, { executionProvider: "cpu", threads: 1 });

  it("the served graph gives log_probs only, logits where asked for; the head at every position changes no output", () => {
    expect(distributionOutputs({})).toEqual(["log_probs"]);
    expect(distributionOutputs({ logitsOutput: true })).toEqual(["logits", "log_probs"]);
    expect(distributionOutputs({ head: "every position" })).toEqual(["log_probs"]);
    // Where the kept positions are cut: before the head in the served graph, after it in the variant.
    const order = (options: GraphOptions) => {
      const nodes = buildCausalLmGraph(config, weights, "weights", options).nodes.map((n) => n.name ?? "");
      return [nodes.findIndex((n) => n.startsWith("keep_logits")), nodes.findIndex((n) => n.startsWith("lm_head"))];
    };
    const [cutServed, headServed] = order({});
    const [cutEvery, headEvery] = order({ head: "every position" });
    expect(cutServed).toBeLessThan(headServed);
    expect(cutEvery).toBeGreaterThan(headEvery);
  });

  it("every graph gives the same log-probabilities, from log_probs or from logits in JavaScript", async () => {
    const variants = await Promise.all([{}, { logitsOutput: true }, { head: "every position" } as const].map((options) => open(buildOnnxModel(config, weights, options))));
    try {
      expect(variants.map((s) => s.io.hasLogProbs)).toEqual([true, true, true]);
      const results = await Promise.all(variants.map(async (s) => (await s.step([{ cache: s.newCache(), tokens: TOKENS, allPositions: true }]))[0]));
      const reference = logSoftmaxRows(flat(referenceLogits(config, weights, TOKENS)), config.vocabSize);
      for (const r of results) {
        expect(r.positionLogProbs!.length).toBe(TOKENS.length * config.vocabSize);
        expect(maxAbsDiff(r.positionLogProbs!, reference)).toBeLessThan(1e-4);
        expect(maxAbsDiff(r.logProbs, reference.subarray(-config.vocabSize))).toBeLessThan(1e-4);
      }
    } finally {
      await Promise.all(variants.map((s) => s.release()));
    }
  });

  it("a graph with neither log_probs nor logits is refused by name", async () => {
    const graph = buildCausalLmGraph(config, weights);
    graph.outputs.splice(graph.outputs.findIndex((o) => o.name === "log_probs"), 1);
    await expect(open(encodeInline(graph, { graphName: "no_distribution" }))).rejects.toThrow(/the graph has neither log_probs nor logits/);
  });
});

describe("weights that do not fit the config", () => {
  const config = tinyConfig("qwen2");
  it("names a missing tensor", () => {
    const weights = randomWeights(config, 1);
    weights.delete("model.layers.1.self_attn.k_proj.bias");
    expect(() => buildOnnxModel(config, weights)).toThrow(ModelFormatError);
    expect(() => buildOnnxModel(config, weights)).toThrow(/model\.layers\.1\.self_attn\.k_proj\.bias is missing/);
  });
  it("names a tensor with the wrong shape", () => {
    const weights = randomWeights(config, 1);
    weights.set("model.norm.weight", { shape: [31], data: new Float32Array(31) });
    expect(() => buildOnnxModel(config, weights)).toThrow(/model\.norm\.weight has shape \[31\], the config implies \[32\]/);
  });
});
