// Random-weight models of any llama/qwen2 shape, written as a complete Hugging Face directory
// (config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
// generation_config.json). Tests and benchmarks run on these; a Qwen2.5-0.5B-shaped model
// (~494M parameters) is generated tensor by tensor and streamed to disk in seconds.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { SeededRandom } from "#core/math/random.ts";
import { parseModelConfig, type ModelConfig } from "./config.ts";
import { ModelFormatError } from "./errors.ts";
import { expectedWeights } from "./weights.ts";
import { writeModelDir } from "#core/formats/model-dir.ts";
import { elementCount, type SafetensorsDtype, type TensorSource } from "#core/formats/safetensors.ts";
import { buildSyntheticTokenizer } from "#core/formats/synthetic-tokenizer.ts";

export interface InitModelOptions {
  /** config.json contents (object or JSON text); missing token ids and `architectures` are filled in. */
  configJson: Record<string, unknown> | string;
  seed: number;
  outDir: string;
  dtype?: SafetensorsDtype;
  /** Split the weights into shards of at most this many bytes (with an index). */
  shardBytes?: number;
}

export interface InitModelResult {
  dir: string;
  config: ModelConfig;
  parameterCount: number;
  files: string[];
}

const ARCHITECTURES = { llama: "LlamaForCausalLM", qwen2: "Qwen2ForCausalLM" } as const;

/** Total number of weights a model with this config has. */
export function parameterCount(config: ModelConfig): number {
  let n = 0;
  for (const shape of expectedWeights(config).values()) n += elementCount(shape);
  return n;
}

/** 32-bit FNV-1a, to give every tensor its own stream derived from (seed, name). */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** Fills `out` with N(mean, std²) draws (Marsaglia's polar method: no trigonometry, ~3x faster than Box-Muller here). */
function fillNormal(rng: SeededRandom, out: Float32Array, mean: number, std: number): Float32Array {
  let i = 0;
  while (i < out.length) {
    const x = 2 * rng.next() - 1;
    const y = 2 * rng.next() - 1;
    const s = x * x + y * y;
    if (s >= 1 || s === 0) continue;
    const f = std * Math.sqrt((-2 * Math.log(s)) / s);
    out[i++] = mean + x * f;
    if (i < out.length) out[i++] = mean + y * f;
  }
  return out;
}

/**
 * Init like Hugging Face (normal with std = initializer_range, 0.02 by default), except that
 * biases and norm weights get noise too (around 0 and 1): a model implementation that drops a
 * bias or a norm scale must produce different logits, so parity tests can catch it.
 */
function initFor(name: string, std: number): { mean: number; std: number } {
  if (name.endsWith("norm.weight")) return { mean: 1, std: 0.02 };
  if (name.endsWith(".bias")) return { mean: 0, std: 0.02 };
  return { mean: 0, std };
}

/** The model's tensors, each generated only when asked for (deterministic per seed and name). */
export function randomWeightSources(config: ModelConfig, seed: number): TensorSource[] {
  const range = typeof config.raw.initializer_range === "number" ? config.raw.initializer_range : 0.02;
  return [...expectedWeights(config)].map(([name, shape]) => ({
    name,
    shape,
    data: () => {
      const { mean, std } = initFor(name, range);
      return fillNormal(new SeededRandom(fnv1a(`${seed}:${name}`)), new Float32Array(elementCount(shape)), mean, std);
    },
  }));
}

const optionalId = (v: unknown) => (typeof v === "number" ? v : undefined);

function parseConfigJson(configJson: Record<string, unknown> | string, path: string): Record<string, unknown> {
  if (typeof configJson !== "string") return { ...configJson };
  try {
    const raw = JSON.parse(configJson);
    if (typeof raw === "object" && raw !== null && !Array.isArray(raw)) return raw;
  } catch (err) {
    throw new ModelFormatError(path, `malformed JSON: ${(err as Error).message}`);
  }
  throw new ModelFormatError(path, "expected a JSON object");
}

/** Writes a complete random model directory and returns its validated config. */
export function initModel(options: InitModelOptions): InitModelResult {
  const configPath = join(options.outDir, "config.json");
  const raw = parseConfigJson(options.configJson, configPath);
  const config = parseModelConfig(raw, configPath);
  const eos = raw.eos_token_id;
  const tokenizer = buildSyntheticTokenizer({
    vocabSize: config.vocabSize,
    addBos: config.modelType === "llama",
    bosTokenId: optionalId(raw.bos_token_id),
    eosTokenIds: typeof eos === "number" ? [eos] : Array.isArray(eos) ? eos.filter((v): v is number => typeof v === "number") : undefined,
    padTokenId: optionalId(raw.pad_token_id),
    modelMaxLength: config.maxPositionEmbeddings,
    source: configPath,
  });
  const filled = {
    architectures: [ARCHITECTURES[config.modelType]],
    ...raw,
    bos_token_id: raw.bos_token_id ?? tokenizer.ids.bos,
    eos_token_id: raw.eos_token_id ?? tokenizer.ids.eos,
    pad_token_id: raw.pad_token_id ?? tokenizer.ids.pad,
  };
  const finalConfig = parseModelConfig(filled, configPath);
  const { files } = writeModelDir(options.outDir, {
    configJson: filled,
    weights: randomWeightSources(finalConfig, options.seed),
    dtype: options.dtype,
    shardBytes: options.shardBytes,
  });
  const json = (value: unknown) => `${JSON.stringify(value, null, 2)}\n`;
  writeFileSync(join(options.outDir, "tokenizer.json"), JSON.stringify(tokenizer.tokenizerJson));
  writeFileSync(join(options.outDir, "tokenizer_config.json"), json(tokenizer.tokenizerConfig));
  writeFileSync(join(options.outDir, "generation_config.json"), json(tokenizer.generationConfig));
  return { dir: options.outDir, config: finalConfig, parameterCount: parameterCount(finalConfig), files };
}
