// One model as the inference service serves it: an ONNX Runtime session, its tokenizer, and
// (when the directory has Hugging Face weights) those weights, which adapters merge into.
// A directory with an ONNX file is served as is; one with only safetensors is exported in
// memory at start-up, so users can point the service at a plain Hugging Face directory.
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import type { ModelConfig } from "#core/model/config.ts";
import type { WeightMap } from "#core/model/weights.ts";
import { loadModelDir, modelFingerprint } from "#core/formats/model-dir.ts";
import { TextTokenizer } from "#core/formats/tokenizer.ts";
import { ModelFormatError } from "#core/model/errors.ts";
import { CausalLmSession } from "#inference/model/session.ts";
import { buildOnnxModel, defaultOnnxPath } from "#inference/model/export.ts";
import type { OrtSessionOptions } from "#inference/model/execution-provider.ts";

/** Context length assumed when neither config.json nor genai_config.json states one. */
const FALLBACK_CONTEXT_TOKENS = 2048;

/** What clients are told about a served model (GetModelInfo's ModelDescription). */
export interface ModelDescription {
  name: string;
  modelType: string;
  numLayers: number;
  /** 0 when the directory does not say. */
  hiddenSize: number;
  maxContextTokens: number;
  /** "exported" (built here from safetensors) or "onnx" (a graph loaded as given). */
  source: "exported" | "onnx";
}

export interface ServedModel {
  /** "expert" or "amateur", for messages and metrics. */
  role: string;
  dir: string;
  fingerprint: string;
  tokenizer: TextTokenizer;
  session: CausalLmSession;
  /** Present when the directory holds Hugging Face weights (needed to merge adapters). */
  weights?: { config: ModelConfig; weights: WeightMap };
  vocabSize: number;
  description: ModelDescription;
}

/** The ONNX file a directory provides, if any: `<dir>/model.onnx` or `<dir>/onnx/model.onnx`. */
export function onnxFileIn(dir: string): string | undefined {
  return [join(dir, "model.onnx"), defaultOnnxPath(dir)].find((p) => existsSync(p));
}

export async function openServedModel(role: string, dirArg: string, options: OrtSessionOptions): Promise<ServedModel> {
  const dir = resolve(dirArg);
  if (!existsSync(dir)) throw new ModelFormatError(dir, `${role} model directory does not exist`);
  const tokenizer = TextTokenizer.load(dir);
  const hasWeights = existsSync(join(dir, "config.json")) && (existsSync(join(dir, "model.safetensors")) || existsSync(join(dir, "model.safetensors.index.json")));
  const loaded = hasWeights ? loadModelDir(dir) : undefined;
  const onnxFile = onnxFileIn(dir);
  let session: CausalLmSession;
  if (onnxFile) session = await CausalLmSession.open(onnxFile, options);
  else if (loaded) session = await CausalLmSession.open(buildOnnxModel(loaded.config, loaded.weights), options);
  else throw new ModelFormatError(dir, `${role} directory has neither an ONNX file (model.onnx, onnx/model.onnx) nor config.json with safetensors weights`);
  try {
    const vocabSize = session.io.vocabSize ?? loaded?.config.vocabSize;
    if (vocabSize === undefined || vocabSize === null) throw new ModelFormatError(dir, "cannot tell the vocabulary size from the ONNX graph or config.json");
    if (loaded && loaded.config.vocabSize !== vocabSize) {
      throw new ModelFormatError(onnxFile ?? dir, `the ONNX graph's logits have ${vocabSize} entries but config.json says vocab_size ${loaded.config.vocabSize}`);
    }
    if (tokenizer.vocabSize > vocabSize) {
      throw new ModelFormatError(join(dir, "tokenizer.json"), `the tokenizer knows ${tokenizer.vocabSize} tokens but the model's logits cover only ${vocabSize}`);
    }
    return {
      role,
      dir,
      fingerprint: hasWeights ? modelFingerprint(dir) : onnxFingerprint(onnxFile!, dir),
      tokenizer,
      session,
      weights: loaded ? { config: loaded.config, weights: loaded.weights } : undefined,
      vocabSize,
      description: describe(dir, session, loaded?.config, onnxFile === undefined),
    };
  } catch (err) {
    await session.release();
    throw err;
  }
}

/** Name, family and size from config.json, else from an ONNX Runtime GenAI genai_config.json, else the graph. */
function describe(dir: string, session: CausalLmSession, config: ModelConfig | undefined, exported: boolean): ModelDescription {
  const raw = config?.raw ?? readOptionalJson(join(dir, "config.json")) ?? {};
  const genai = ((readOptionalJson(join(dir, "genai_config.json"))?.model ?? {}) as Record<string, unknown>);
  const decoder = (genai.decoder ?? {}) as Record<string, unknown>;
  const number = (...values: unknown[]) => values.find((v): v is number => typeof v === "number" && Number.isInteger(v) && v > 0);
  const string = (...values: unknown[]) => values.find((v): v is string => typeof v === "string" && v.length > 0);
  return {
    name: string(raw._name_or_path) ?? basename(dir),
    modelType: string(config?.modelType, raw.model_type, genai.type) ?? "unknown",
    numLayers: session.io.numLayers,
    hiddenSize: number(config?.hiddenSize, raw.hidden_size, decoder.hidden_size) ?? 0,
    maxContextTokens: number(config?.maxPositionEmbeddings, raw.max_position_embeddings, genai.context_length) ?? FALLBACK_CONTEXT_TOKENS,
    source: exported ? "exported" : "onnx",
  };
}

function readOptionalJson(path: string): Record<string, unknown> | undefined {
  if (!existsSync(path)) return undefined;
  try {
    const json = JSON.parse(readFileSync(path, "utf8"));
    return typeof json === "object" && json !== null && !Array.isArray(json) ? json : undefined;
  } catch (err) {
    throw new ModelFormatError(path, `malformed JSON: ${(err as Error).message}`);
  }
}

/** For directories with only an ONNX graph: the graph, its external data and the tokenizer. */
function onnxFingerprint(onnxFile: string, dir: string): string {
  const hash = createHash("sha256").update("lightreasoner-onnx-fingerprint-v1\n");
  for (const path of [onnxFile, `${onnxFile}.data`, join(dir, "tokenizer.json"), join(dir, "tokenizer_config.json")]) {
    if (existsSync(path)) hash.update(`${path.slice(dir.length)}\n`).update(readFileSync(path));
  }
  return hash.digest("hex");
}
