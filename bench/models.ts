// The model pairs the benchmark runs: the built-in pair as shipped, and random-weight pairs of
// a real shape (a Qwen2.5-0.5B-shaped expert over the 151,936-token vocabulary with a smaller
// amateur of the same vocabulary), written by init-model and exported to ONNX once into a
// cache directory and reused while their recipe is unchanged.
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseModelConfig } from "#core/model/config.ts";
import type { ModelConfig } from "#core/model/config.ts";
import { initModel, parameterCount } from "#core/model/init-model.ts";
import { defaultOnnxPath, exportOnnx } from "#inference/model/export.ts";
import { REPO_ROOT } from "./paths.ts";

/** Generated models and data live here between runs (gitignored). */
export const DEFAULT_CACHE_DIR = join(REPO_ROOT, ".cache", "bench");

/**
 * Qwen2.5-0.5B's shape (tied embeddings, 24 layers, 14 query / 2 KV heads), random weights.
 * initializer_range 0.15 instead of 0.02 gives logits a spread of about 4.5 instead of 0.6:
 * peaked next-token distributions with a handful of plausible tokens, as a trained model
 * has, where the default would give near-uniform ones whose plausible set holds thousands.
 */
export const QWEN05_EXPERT = {
  model_type: "qwen2",
  vocab_size: 151_936,
  hidden_size: 896,
  intermediate_size: 4864,
  num_hidden_layers: 24,
  num_attention_heads: 14,
  num_key_value_heads: 2,
  max_position_embeddings: 32_768,
  rope_theta: 1_000_000,
  rms_norm_eps: 1e-6,
  tie_word_embeddings: true,
  initializer_range: 0.15,
};

/** A smaller amateur over the same vocabulary: a quarter of the layers, half the width. */
export const QWEN05_AMATEUR = {
  ...QWEN05_EXPERT,
  hidden_size: 448,
  intermediate_size: 2432,
  num_hidden_layers: 6,
  num_attention_heads: 7,
  num_key_value_heads: 1,
};

export interface PairRecipe {
  /** Short name used in the cache path, the table and bench.json. */
  name: string;
  description: string;
  /** Either directories as shipped (relative to the repository root), or configs to generate. */
  source: { kind: "dirs"; expertDir: string; amateurDir: string } | { kind: "random"; expert: Record<string, unknown>; amateur: Record<string, unknown>; seed: number };
}

export const BUILT_IN_PAIR: PairRecipe = {
  name: "built-in",
  description: "models/expert + models/amateur (the pretrained pair the project ships)",
  source: { kind: "dirs", expertDir: "models/expert", amateurDir: "models/amateur" },
};

export const QWEN05_PAIR: PairRecipe = {
  name: "qwen2.5-0.5b-shape",
  description: "random Qwen2.5-0.5B-shaped expert + 6-layer, 448-wide amateur, vocabulary 151,936",
  source: { kind: "random", expert: QWEN05_EXPERT, amateur: QWEN05_AMATEUR, seed: 5 },
};

export interface ModelFacts {
  dir: string;
  config: ModelConfig;
  parameters: number;
}

export interface PreparedPair {
  recipe: PairRecipe;
  expert: ModelFacts;
  amateur: ModelFacts;
  /** Seconds spent generating and exporting in this run; 0 when the cache was reused. */
  preparedSeconds: number;
  reusedCache: boolean;
}

/** What a cached model directory was made from; a different stamp means regenerate. */
const STAMP_FILE = "bench-recipe.json";
const STAMP_VERSION = 1;

function facts(dir: string): ModelFacts {
  const configPath = join(dir, "config.json");
  const config = parseModelConfig(JSON.parse(readFileSync(configPath, "utf8")), configPath);
  return { dir, config, parameters: parameterCount(config) };
}

function stampOf(configJson: Record<string, unknown>, seed: number): string {
  return JSON.stringify({ version: STAMP_VERSION, configJson, seed });
}

/** True when `dir` holds a finished model generated from exactly this recipe. */
function cached(dir: string, stamp: string): boolean {
  const stampPath = join(dir, STAMP_FILE);
  return existsSync(stampPath) && existsSync(defaultOnnxPath(dir)) && readFileSync(stampPath, "utf8") === stamp;
}

async function generate(dir: string, configJson: Record<string, unknown>, seed: number, log: (line: string) => void): Promise<void> {
  const stamp = stampOf(configJson, seed);
  if (cached(dir, stamp)) return;
  rmSync(dir, { recursive: true, force: true });
  const started = performance.now();
  initModel({ configJson, seed, outDir: dir });
  await exportOnnx({ modelDir: dir });
  // The stamp goes last: an interrupted generation is redone, never reused half-written.
  writeFileSync(join(dir, STAMP_FILE), stamp);
  log(`generated ${dir} (init-model + export-onnx) in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

/** Resolves a recipe to two model directories, generating random pairs into `cacheDir` when needed. */
export async function preparePair(recipe: PairRecipe, cacheDir: string, log: (line: string) => void = () => {}): Promise<PreparedPair> {
  const started = performance.now();
  const source = recipe.source;
  if (source.kind === "dirs") {
    return { recipe, expert: facts(resolve(REPO_ROOT, source.expertDir)), amateur: facts(resolve(REPO_ROOT, source.amateurDir)), preparedSeconds: 0, reusedCache: true };
  }
  const root = resolve(cacheDir, recipe.name);
  const expertDir = join(root, "expert");
  const amateurDir = join(root, "amateur");
  const reused = cached(expertDir, stampOf(source.expert, source.seed)) && cached(amateurDir, stampOf(source.amateur, source.seed + 1));
  await generate(expertDir, source.expert, source.seed, log);
  await generate(amateurDir, source.amateur, source.seed + 1, log);
  return {
    recipe,
    expert: facts(expertDir),
    amateur: facts(amateurDir),
    preparedSeconds: reused ? 0 : (performance.now() - started) / 1000,
    reusedCache: reused,
  };
}
