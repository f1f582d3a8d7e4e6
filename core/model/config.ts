// The Hugging Face `config.json` of a causal LM, reduced to the fields the llama and qwen2
// families need, validated once so neither model implementation has to re-check shapes.
import { readFileSync } from "node:fs";
import { ModelFormatError, UnsupportedModelError } from "./errors.ts";

export const SUPPORTED_MODEL_TYPES = ["llama", "qwen2"] as const;
export type ModelType = (typeof SUPPORTED_MODEL_TYPES)[number];

export interface ModelConfig {
  modelType: ModelType;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  /** Fewer than numHeads means grouped-query attention. */
  numKvHeads: number;
  headDim: number;
  ropeTheta: number;
  rmsNormEps: number;
  tieWordEmbeddings: boolean;
  /** Biases on q/k/v projections (always true for qwen2, `attention_bias` for llama). */
  attentionBias: boolean;
  maxPositionEmbeddings: number;
  bosTokenId: number | null;
  eosTokenIds: number[];
  /** The parsed JSON as read, so writers can round-trip fields this project ignores. */
  raw: Record<string, unknown>;
}

function positiveInt(raw: Record<string, unknown>, key: string, file: string): number {
  const value = raw[key];
  if (typeof value !== "number" || !Number.isInteger(value) || value <= 0) {
    throw new ModelFormatError(file, `"${key}" must be a positive integer, got ${JSON.stringify(value)}`);
  }
  return value;
}

function positiveNumber(raw: Record<string, unknown>, key: string, fallback: number, file: string): number {
  const value = raw[key] ?? fallback;
  if (typeof value !== "number" || !(value > 0)) {
    throw new ModelFormatError(file, `"${key}" must be a positive number, got ${JSON.stringify(value)}`);
  }
  return value;
}

function tokenIds(value: unknown): number[] {
  if (typeof value === "number") return [value];
  if (Array.isArray(value)) return value.filter((v): v is number => typeof v === "number");
  return [];
}

/** Validates a parsed config.json object; `file` names the source in error messages. */
export function parseModelConfig(raw: unknown, file = "config.json"): ModelConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new ModelFormatError(file, "expected a JSON object");
  }
  const cfg = raw as Record<string, unknown>;
  const modelType = cfg.model_type;
  if (typeof modelType !== "string") {
    throw new ModelFormatError(file, `"model_type" is missing; supported: ${SUPPORTED_MODEL_TYPES.join(", ")}`);
  }
  if (!(SUPPORTED_MODEL_TYPES as readonly string[]).includes(modelType)) {
    throw new UnsupportedModelError(
      file,
      `model_type "${modelType}" is not supported; supported: ${SUPPORTED_MODEL_TYPES.join(", ")}`,
    );
  }
  const hiddenSize = positiveInt(cfg, "hidden_size", file);
  const numHeads = positiveInt(cfg, "num_attention_heads", file);
  const numKvHeads = cfg.num_key_value_heads === undefined ? numHeads : positiveInt(cfg, "num_key_value_heads", file);
  if (numHeads % numKvHeads !== 0) {
    throw new ModelFormatError(
      file,
      `num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`,
    );
  }
  let headDim: number;
  if (cfg.head_dim === undefined || cfg.head_dim === null) {
    if (hiddenSize % numHeads !== 0) {
      throw new ModelFormatError(file, `hidden_size (${hiddenSize}) is not divisible by num_attention_heads (${numHeads}) and no head_dim is given`);
    }
    headDim = hiddenSize / numHeads;
  } else {
    headDim = positiveInt(cfg, "head_dim", file);
  }
  if (headDim % 2 !== 0) throw new ModelFormatError(file, `head_dim (${headDim}) must be even for rotary embeddings`);
  const ropeScaling = cfg.rope_scaling;
  if (ropeScaling !== undefined && ropeScaling !== null) {
    throw new UnsupportedModelError(file, `rope_scaling ${JSON.stringify(ropeScaling)} is not supported; only plain RoPE is`);
  }
  return {
    modelType: modelType as ModelType,
    vocabSize: positiveInt(cfg, "vocab_size", file),
    hiddenSize,
    intermediateSize: positiveInt(cfg, "intermediate_size", file),
    numLayers: positiveInt(cfg, "num_hidden_layers", file),
    numHeads,
    numKvHeads,
    headDim,
    ropeTheta: positiveNumber(cfg, "rope_theta", 10000, file),
    rmsNormEps: positiveNumber(cfg, "rms_norm_eps", 1e-6, file),
    // LlamaConfig and Qwen2Config both default to untied embeddings.
    tieWordEmbeddings: cfg.tie_word_embeddings === true,
    attentionBias: modelType === "qwen2" ? true : cfg.attention_bias === true,
    maxPositionEmbeddings: typeof cfg.max_position_embeddings === "number" ? cfg.max_position_embeddings : 2048,
    bosTokenId: typeof cfg.bos_token_id === "number" ? cfg.bos_token_id : null,
    eosTokenIds: tokenIds(cfg.eos_token_id),
    raw: cfg,
  };
}

/** Reads and validates `<dir>/config.json`. */
export function readModelConfig(path: string): ModelConfig {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ModelFormatError(path, `cannot read config: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ModelFormatError(path, `malformed JSON: ${(err as Error).message}`);
  }
  return parseModelConfig(json, path);
}
