// Tiny random llama/qwen2 models built in memory for the model tests: a config through the
// real config parser, and weights scaled so activations stay near unit size and the logits
// differ enough between tokens that a wrong mask or rotation shows.
import type { ModelConfig } from "#core/model/config.ts";
import { parseModelConfig } from "#core/model/config.ts";
import { SeededRandom } from "#core/math/random.ts";
import type { WeightMap } from "#core/model/weights.ts";
import { expectedWeights } from "#core/model/weights.ts";

/** A Hugging Face config.json object for a tiny model; `overrides` replace any field. */
export function tinyConfigJson(modelType: "llama" | "qwen2", overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model_type: modelType,
    vocab_size: 64,
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    rope_theta: 10000,
    rms_norm_eps: 1e-6,
    tie_word_embeddings: false,
    max_position_embeddings: 128,
    ...overrides,
  };
}

export const tinyConfig = (modelType: "llama" | "qwen2", overrides: Record<string, unknown> = {}): ModelConfig =>
  parseModelConfig(tinyConfigJson(modelType, overrides), "tiny-config.json");

export function randomWeights(config: ModelConfig, seed: number): WeightMap {
  const rng = new SeededRandom(seed);
  const weights: WeightMap = new Map();
  for (const [name, shape] of expectedWeights(config)) {
    const count = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(count);
    if (name.endsWith("norm.weight")) for (let i = 0; i < count; i++) data[i] = 1 + 0.2 * rng.normal();
    else if (name.endsWith(".bias")) for (let i = 0; i < count; i++) data[i] = 0.2 * rng.normal();
    else {
      // Embeddings near unit size; linear layers scaled by fan-in.
      const std = name === "model.embed_tokens.weight" ? 1 : 1 / Math.sqrt(shape[1]);
      for (let i = 0; i < count; i++) data[i] = std * rng.normal();
    }
    weights.set(name, { shape, data });
  }
  return weights;
}
