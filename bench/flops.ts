// Arithmetic a causal LM does per generated token, for the ceiling the benchmark compares
// measured speed against: 2 FLOPs per weight of every linear layer and the LM head (a
// multiply and an add), plus attention's two products over the keys a token attends to.
// Embedding lookups, norms, RoPE and softmax are left out: they are memory-bound and tiny.
// And the bytes a decode step must read: every such weight once for the whole batch, and
// each row's cached keys and values.
import type { ModelConfig } from "#core/model/config.ts";
import { LINEAR_MODULES, linearShape } from "#core/model/weights.ts";

export interface TokenFlops {
  /** Linear layers of every block. */
  linear: number;
  /** hidden_size x vocab_size output projection. */
  lmHead: number;
  /** Q K^T and the weighted sum of V over `context` keys, in every layer. */
  attention: number;
  total: number;
}

/** FLOPs to compute one new token's logits with `context` tokens (itself included) in the cache. */
export function flopsPerToken(config: ModelConfig, context: number): TokenFlops {
  let perLayer = 0;
  for (const module of LINEAR_MODULES) {
    const [out, inFeatures] = linearShape(config, module);
    perLayer += out * inFeatures;
  }
  const linear = 2 * config.numLayers * perLayer;
  const lmHead = 2 * config.vocabSize * config.hiddenSize;
  const attention = 4 * config.numLayers * config.numHeads * config.headDim * context;
  return { linear, lmHead, attention, total: linear + lmHead + attention };
}

/** Mean context over a trajectory that starts with `prompt` tokens and adds `generated`. */
export const meanContext = (prompt: number, generated: number) => prompt + (generated + 1) / 2;

/**
 * Bytes one decode step of `batch` rows reads from memory at `context` cached positions per row:
 * every linear and LM-head weight once (the batch shares them) and each row's keys and values,
 * all `bytesPerValue` wide. The embedding lookup reads one row per token and is left out.
 */
export function decodeStepBytes(config: ModelConfig, batch: number, context: number, bytesPerValue = 4): number {
  const { linear, lmHead } = flopsPerToken(config, context);
  const weights = (linear + lmHead) / 2;
  return bytesPerValue * (weights + batch * context * kvValuesPerPosition(config));
}

/** Values one cached position holds: a key and a value per layer and KV head. */
export function kvValuesPerPosition(config: Pick<ModelConfig, "numLayers" | "numKvHeads" | "headDim">): number {
  return 2 * config.numLayers * config.numKvHeads * config.headDim;
}
