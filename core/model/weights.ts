// The weights of a llama/qwen2 causal LM as both model implementations consume them:
// Hugging Face tensor names, float32 data, shapes checked against the config. This file is
// the single list of which tensors a model has, so the ONNX exporter, the TensorFlow.js
// model, the safetensors loader and init-model cannot disagree about it.
import type { ModelConfig } from "./config.ts";

/** A dense float32 tensor in row-major order. */
export interface Float32Tensor {
  shape: number[];
  data: Float32Array;
}

/** Hugging Face name -> tensor, e.g. `model.layers.0.self_attn.q_proj.weight`. */
export type WeightMap = Map<string, Float32Tensor>;

/** The linear projections LoRA may target, by their Hugging Face module names. */
export const LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;
export type LinearModule = (typeof LINEAR_MODULES)[number];

export const layerPrefix = (layer: number) => `model.layers.${layer}`;

/** Full name of a linear module's weight in layer `layer`. */
export function linearWeightName(layer: number, module: LinearModule): string {
  const block = module === "gate_proj" || module === "up_proj" || module === "down_proj" ? "mlp" : "self_attn";
  return `${layerPrefix(layer)}.${block}.${module}.weight`;
}

/** [out_features, in_features] of a linear module (the PyTorch nn.Linear layout). */
export function linearShape(config: ModelConfig, module: LinearModule): [number, number] {
  const { hiddenSize: h, intermediateSize: m, numHeads, numKvHeads, headDim } = config;
  switch (module) {
    case "q_proj":
      return [numHeads * headDim, h];
    case "k_proj":
    case "v_proj":
      return [numKvHeads * headDim, h];
    case "o_proj":
      return [h, numHeads * headDim];
    case "gate_proj":
    case "up_proj":
      return [m, h];
    case "down_proj":
      return [h, m];
  }
}

/** Every tensor the model must have, with its expected shape, in a stable order. */
export function expectedWeights(config: ModelConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  out.set("model.embed_tokens.weight", [config.vocabSize, config.hiddenSize]);
  for (let i = 0; i < config.numLayers; i++) {
    const p = layerPrefix(i);
    out.set(`${p}.input_layernorm.weight`, [config.hiddenSize]);
    for (const module of LINEAR_MODULES) {
      out.set(linearWeightName(i, module), linearShape(config, module));
      if (config.attentionBias && (module === "q_proj" || module === "k_proj" || module === "v_proj")) {
        out.set(`${p}.self_attn.${module}.bias`, [linearShape(config, module)[0]]);
      }
    }
    out.set(`${p}.post_attention_layernorm.weight`, [config.hiddenSize]);
  }
  out.set("model.norm.weight", [config.hiddenSize]);
  if (!config.tieWordEmbeddings) out.set("lm_head.weight", [config.vocabSize, config.hiddenSize]);
  return out;
}

/** The output projection: lm_head, or the embedding matrix when tied. */
export function lmHeadName(config: ModelConfig): string {
  return config.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
}
