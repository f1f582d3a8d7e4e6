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
import { loadModelDir, locateModelWeights, modelFingerprintInBackground, modelWeightFiles } from "#core/formats/model-dir.ts";
import { TOKENIZER_FILE, TextTokenizer } from "#core/formats/tokenizer.ts";
import { ModelFormatError } from "#core/model/errors.ts";
import { CausalLmSession } from "#inference/model/session.ts";
import type { ServedGraph } from "#inference/model/export.ts";
import { buildServedGraph, defaultOnnxPath, fileBackedWeights } from "#inference/model/export.ts";
import type { OrtSessionOptions } from "#inference/model/execution-provider.ts";
import type { GraphOptions } from "#inference/model/onnx-graph.ts";

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

/** The expert takes adapters; the amateur never does (the method trains the expert only). */
export type ModelRole = "expert" | "amateur";

/**
 * The graph each role is served with. The amateur's has no LoRA inputs: their rank-0 side
 * branches (three nodes and two inputs per projection, seven projections per layer) cost a
 * kernel call and a feed each, every step, for an adapter it never takes.
 */
export const SERVED_GRAPH_OPTIONS: Readonly<Record<ModelRole, GraphOptions>> = { expert: {}, amateur: { loraModules: [] } };

export interface ServedModel {
  /** For messages and metrics. */
  role: ModelRole;
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

/** A model whose ONNX Runtime session is open and whose tokenizer is not built yet (see openModelPair). */
export interface OpenedSession {
  role: ModelRole;
  dir: string;
  session: CausalLmSession;
  config?: ModelConfig;
  fingerprint: Promise<string>;
  exported: boolean;
}

/**
 * Opens one model's session. Its fingerprint is hashed on a worker thread once `hashAfter`
 * settles (openModelPair: once both sessions are open, and the amateur after the expert), so
 * hashing gigabytes neither competes with the loading nor delays listening. Stage times go to
 * `options.log`.
 */
export async function openModelSession(role: ModelRole, dirArg: string, options: OrtSessionOptions, hashAfter?: Promise<unknown>): Promise<OpenedSession> {
  const dir = resolve(dirArg);
  if (!existsSync(dir)) throw new ModelFormatError(dir, `${role} model directory does not exist`);
  // Checked before the seconds a session takes, so a directory without one fails at once.
  if (!existsSync(join(dir, TOKENIZER_FILE))) throw new ModelFormatError(join(dir, TOKENIZER_FILE), "missing: the model directory needs a tokenizer.json");
  const hasWeights = existsSync(join(dir, "config.json")) && (existsSync(join(dir, "model.safetensors")) || existsSync(join(dir, "model.safetensors.index.json")));
  const onnxFile = hasWeights ? undefined : onnxFileIn(dir);
  if (!hasWeights && !onnxFile) {
    throw new ModelFormatError(dir, `${role} directory has neither an ONNX file (model.onnx, onnx/model.onnx) nor config.json with safetensors weights`);
  }
  const log = options.log ?? (() => {});
  const started = performance.now();
  if (!hasWeights) {
    const session = await CausalLmSession.open(onnxFile!, options);
    log(`${role}: ONNX Runtime session for ${onnxFile} in ${(performance.now() - started).toFixed(0)} ms`);
    return { role, dir, session, fingerprint: Promise.resolve(onnxFingerprint(onnxFile!, dir)), exported: false };
  }
  const fingerprint = (hashAfter ?? Promise.resolve()).catch(() => {}).then(() => modelFingerprintInBackground(dir));
  // Failures surface where the fingerprint is awaited (GetModelInfo), not as unhandled rejections.
  fingerprint.catch(() => {});
  const { config, graph } = servedGraph(dir, SERVED_GRAPH_OPTIONS[role]);
  const graphMs = performance.now() - started;
  const session = await CausalLmSession.open(graph, options);
  log(`${role}: graph built in ${graphMs.toFixed(0)} ms, ONNX Runtime session opened in ${(performance.now() - started - graphMs).toFixed(0)} ms`);
  return { role, dir, session, config, fingerprint, exported: true };
}

/**
 * The opened model with its tokenizer, checked against the logits. `peer` (the expert, for
 * the amateur) lends its tokenizer when every file the tokenizer is read from says the same,
 * since building a 150k-token tokenizer takes about a second. The caller releases the session
 * when this throws.
 */
export function withTokenizer(opened: OpenedSession, options: OrtSessionOptions, peer?: ServedModel): ServedModel {
  const { role, dir, session, config } = opened;
  const started = performance.now();
  const borrowed = peer !== undefined && sameTokenizerFiles(peer.dir, dir);
  const tokenizer = borrowed ? peer.tokenizer : TextTokenizer.load(dir);
  options.log?.(`${role}: tokenizer ${borrowed ? `shared with the ${peer.role}` : `built in ${(performance.now() - started).toFixed(0)} ms`}`);
  const vocabSize = session.io.vocabSize ?? config?.vocabSize;
  if (vocabSize === undefined || vocabSize === null) throw new ModelFormatError(dir, "cannot tell the vocabulary size from the ONNX graph or config.json");
  if (config && config.vocabSize !== vocabSize) {
    throw new ModelFormatError(dir, `the ONNX graph's logits have ${vocabSize} entries but config.json says vocab_size ${config.vocabSize}`);
  }
  if (tokenizer.vocabSize > vocabSize) {
    throw new ModelFormatError(join(dir, TOKENIZER_FILE), `the tokenizer knows ${tokenizer.vocabSize} tokens but the model's logits cover only ${vocabSize}`);
  }
  return { role, dir, fingerprint: opened.fingerprint, tokenizer, session, config, vocabSize, description: describe(dir, session, config, opened.exported) };
}

/** Opens one model with its tokenizer (openModelPair orders the steps of two). */
export async function openServedModel(role: ModelRole, dir: string, options: OrtSessionOptions, peer?: ServedModel): Promise<ServedModel> {
  const opened = await openModelSession(role, dir, options, peer?.fingerprint);
  try {
    return withTokenizer(opened, options, peer);
  } catch (err) {
    await opened.session.release();
    throw err;
  }
}

/**
 * The graph for a Hugging Face directory: float32 safetensors are left where they are for
 * ONNX Runtime to read; F16/BF16 ones are decoded into the graph's bytes, which ONNX Runtime
 * copies, so the JavaScript copy is garbage once the session is open. `options` only for the
 * bench's variants (the service builds the default graph).
 */
export function servedGraph(dir: string, options: GraphOptions = {}): { config: ModelConfig; graph: ServedGraph } {
  const sourceFiles = modelWeightFiles(dir);
  const located = locateModelWeights(dir);
  if (located) return { config: located.config, graph: { ...buildServedGraph(located.config, fileBackedWeights(located.tensors), dir, options), sourceFiles } };
  const loaded = loadModelDir(dir);
  return { config: loaded.config, graph: { ...buildServedGraph(loaded.config, loaded.weights, dir, options), sourceFiles } };
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
