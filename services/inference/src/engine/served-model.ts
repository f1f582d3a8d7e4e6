// One model as the inference service serves it: an ONNX Runtime session and its tokenizer.
// A directory with Hugging Face weights is served through a graph built at start-up whose
// weights ONNX Runtime reads straight from the safetensors file (float32; other dtypes are
// decoded once and dropped), with LoRA inputs so adapters apply as side branches: there is
// one copy of the weights, held by ONNX Runtime. A directory with only an ONNX file is served
// as given (without adapters unless the graph has LoRA inputs).
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import type { ModelConfig } from "#core/model/config.ts";
import { loadModelDir, locateModelWeights, modelFingerprintInBackground } from "#core/formats/model-dir.ts";
import { TextTokenizer } from "#core/formats/tokenizer.ts";
import { ModelFormatError } from "#core/model/errors.ts";
import { CausalLmSession } from "#inference/model/session.ts";
import type { ServedGraph } from "#inference/model/export.ts";
import { buildServedGraph, defaultOnnxPath, fileBackedWeights } from "#inference/model/export.ts";
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
  /** Hashed on worker threads while the model loads (gigabytes of sha256 need not delay listening). */
  fingerprint: Promise<string>;
  tokenizer: TextTokenizer;
  session: CausalLmSession;
  /** Present when the directory holds Hugging Face weights (adapters are checked against it). */
  config?: ModelConfig;
  vocabSize: number;
  description: ModelDescription;
}

/** The ONNX file a directory provides, if any: `<dir>/model.onnx` or `<dir>/onnx/model.onnx`. */
export function onnxFileIn(dir: string): string | undefined {
  return [join(dir, "model.onnx"), defaultOnnxPath(dir)].find((p) => existsSync(p));
}

/**
 * Opens one model. `peer` (the expert, when opening the amateur) lends its tokenizer when
 * every file the tokenizer is read from says the same, since building a 150k-token
 * tokenizer takes about a second.
 */
export async function openServedModel(role: string, dirArg: string, options: OrtSessionOptions, peer?: ServedModel): Promise<ServedModel> {
  const dir = resolve(dirArg);
  if (!existsSync(dir)) throw new ModelFormatError(dir, `${role} model directory does not exist`);
  const tokenizer = peer && sameTokenizerFiles(peer.dir, dir) ? peer.tokenizer : TextTokenizer.load(dir);
  const hasWeights = existsSync(join(dir, "config.json")) && (existsSync(join(dir, "model.safetensors")) || existsSync(join(dir, "model.safetensors.index.json")));
  const onnxFile = hasWeights ? undefined : onnxFileIn(dir);
  let session: CausalLmSession;
  let config: ModelConfig | undefined;
  const fingerprint = hasWeights ? modelFingerprintInBackground(dir) : undefined;
  // Failures surface where the fingerprint is awaited (GetModelInfo), not as unhandled rejections.
  fingerprint?.catch(() => {});
  if (hasWeights) {
    const built = servedGraph(dir);
    config = built.config;
    session = await CausalLmSession.open(built.graph, options);
  } else if (onnxFile) {
    session = await CausalLmSession.open(onnxFile, options);
  } else {
    throw new ModelFormatError(dir, `${role} directory has neither an ONNX file (model.onnx, onnx/model.onnx) nor config.json with safetensors weights`);
  }
  try {
    const vocabSize = session.io.vocabSize ?? config?.vocabSize;
    if (vocabSize === undefined || vocabSize === null) throw new ModelFormatError(dir, "cannot tell the vocabulary size from the ONNX graph or config.json");
    if (config && config.vocabSize !== vocabSize) {
      throw new ModelFormatError(dir, `the ONNX graph's logits have ${vocabSize} entries but config.json says vocab_size ${config.vocabSize}`);
    }
    if (tokenizer.vocabSize > vocabSize) {
      throw new ModelFormatError(join(dir, "tokenizer.json"), `the tokenizer knows ${tokenizer.vocabSize} tokens but the model's logits cover only ${vocabSize}`);
    }
    return {
      role,
      dir,
      fingerprint: fingerprint ?? Promise.resolve(onnxFingerprint(onnxFile!, dir)),
      tokenizer,
      session,
      config,
      vocabSize,
      description: describe(dir, session, config, hasWeights),
    };
  } catch (err) {
    await session.release();
    throw err;
  }
}

/**
 * The graph for a Hugging Face directory: float32 safetensors are left where they are for
 * ONNX Runtime to read; F16/BF16 ones are decoded into the graph's bytes, which ONNX Runtime
 * copies, so the JavaScript copy is garbage once the session is open.
 */
export function servedGraph(dir: string): { config: ModelConfig; graph: ServedGraph } {
  const located = locateModelWeights(dir);
  if (located) return { config: located.config, graph: buildServedGraph(located.config, fileBackedWeights(located.tensors), dir) };
  const loaded = loadModelDir(dir);
  return { config: loaded.config, graph: buildServedGraph(loaded.config, loaded.weights, dir) };
}

/** tokenizer.json and tokenizer_config.json byte for byte, and the eos ids TextTokenizer.load reads from the two configs. */
function sameTokenizerFiles(a: string, b: string): boolean {
  const bytes = (dir: string, name: string) => (existsSync(join(dir, name)) ? readFileSync(join(dir, name)) : null);
  for (const name of ["tokenizer.json", "tokenizer_config.json"]) {
    const x = bytes(a, name);
    const y = bytes(b, name);
    if (x === null || y === null ? x !== y : !x.equals(y)) return false;
  }
  const eos = (dir: string) => ["generation_config.json", "config.json"].map((name) => JSON.stringify(readOptionalJson(join(dir, name))?.eos_token_id ?? null)).join();
  return eos(a) === eos(b);
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
