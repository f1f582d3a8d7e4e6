// Tiny random llama / qwen2 models built in memory for the model tests: every variant the
// architecture has (grouped-query attention, q/k/v biases, tied or untied embeddings, a
// head_dim that is not hidden / heads), small enough that a float64 loop reference is instant.
import type { ModelConfig } from "#core/model/config.ts";
import { parseModelConfig } from "#core/model/config.ts";
import type { WeightMap } from "#core/model/weights.ts";
import { expectedWeights } from "#core/model/weights.ts";
import { SeededRandom } from "#core/math/random.ts";

const SHARED = {
  vocab_size: 64,
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
};

export const TINY_VARIANTS: Record<string, Record<string, unknown>> = {
  "llama untied": { ...SHARED, model_type: "llama", rope_theta: 10000, tie_word_embeddings: false },
  "llama tied, attention_bias, head_dim 16": {
    ...SHARED,
    model_type: "llama",
    rope_theta: 500000,
    tie_word_embeddings: true,
    attention_bias: true,
    head_dim: 16,
  },
  "qwen2 untied": { ...SHARED, model_type: "qwen2", rope_theta: 1000000, tie_word_embeddings: false },
  "qwen2 tied": { ...SHARED, model_type: "qwen2", rope_theta: 1000000, tie_word_embeddings: true },
};

export function tinyConfig(variant: keyof typeof TINY_VARIANTS): ModelConfig {
  return parseModelConfig(TINY_VARIANTS[variant], `tiny ${variant}`);
}

/**
 * Weights scaled so activations stay near unit size through both layers and attention is
 * far from uniform, which makes positional and masking mistakes visible in the logits.
 */
export function randomWeights(config: ModelConfig, seed: number): WeightMap {
  const random = new SeededRandom(seed);
  const weights: WeightMap = new Map();
  for (const [name, shape] of expectedWeights(config)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    const isNorm = name.endsWith("norm.weight");
    const std = isNorm ? 0.1 : name.endsWith(".bias") ? 0.2 : name === "model.embed_tokens.weight" ? 1 : 1.5 / Math.sqrt(shape[1]);
    for (let i = 0; i < data.length; i++) data[i] = (isNorm ? 1 : 0) + std * random.normal();
    weights.set(name, { shape, data });
  }
  return weights;
}

/** Random token rows of the given lengths, left-padded with `padId` to the longest. */
export function leftPaddedBatch(lengths: number[], vocabSize: number, seed: number, padId = 0): { ids: number[][]; mask: number[][]; rows: number[][] } {
  const random = new SeededRandom(seed);
  const width = Math.max(...lengths);
  const rows = lengths.map((n) => Array.from({ length: n }, () => random.int(vocabSize)));
  return {
    rows,
    ids: rows.map((r) => [...Array(width - r.length).fill(padId), ...r]),
    mask: rows.map((r) => [...Array(width - r.length).fill(0), ...Array(r.length).fill(1)]),
  };
}
