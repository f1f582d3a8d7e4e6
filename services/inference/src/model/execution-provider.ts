// Opens an ONNX Runtime session on the execution provider the configuration asks for.
// "auto" uses CUDA where its provider libraries are installed (onnxruntime-node installed
// with ONNXRUNTIME_NODE_INSTALL=cuda12) and falls back to CPU otherwise, saying so through
// the caller's logger; "cuda" insists and fails with the reason.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import * as ort from "onnxruntime-node";
import { ModelFormatError } from "#core/model/errors.ts";
import { openPrepackedSession } from "./prepacked-cache.ts";

export const EXECUTION_PROVIDER_CHOICES = ["cpu", "cuda", "auto"] as const;
export type ExecutionProviderChoice = (typeof EXECUTION_PROVIDER_CHOICES)[number];
export type ExecutionProvider = "cpu" | "cuda";

export interface OrtSessionOptions {
  executionProvider?: ExecutionProviderChoice;
  /** Threads inside one operator; ONNX Runtime's default (all cores) when absent. */
  threads?: number;
  /** Let ONNX Runtime prepack weights on the CPU (default true; false saves start-up time, costs decode speed). */
  prepack?: boolean;
  /**
   * Keep ONNX Runtime's prepacked weights of CPU sessions in this folder between starts
   * (prepacked-cache.ts): the first start writes an entry, later ones read it instead of
   * packing. Only for graphs given as bytes with their source files named (ModelLocation).
   */
  prepackedCacheDir?: string;
  /** Write ONNX Runtime's per-node trace to `<prefix>_<time>.json` (ended by CausalLmSession.endProfiling); for bench/decode-profile.ts. */
  profileFilePrefix?: string;
  /** Receives one line saying which provider runs, and why CUDA was not used under "auto". */
  log?: (message: string) => void;
}

/** The configuration asked for CUDA and ONNX Runtime could not provide it. */
export class ExecutionProviderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ExecutionProviderError";
  }
}

/** Where onnxruntime-node keeps its native libraries for this platform. */
function bindingDir(): string {
  const entry = createRequire(import.meta.url).resolve("onnxruntime-node");
  return join(dirname(entry), "..", "bin", "napi-v6", process.platform, process.arch);
}

/** True when the CUDA provider library sits beside the binding (it is not bundled by default). */
export function cudaProviderInstalled(): boolean {
  const dir = bindingDir();
  const file = process.platform === "win32" ? "onnxruntime_providers_cuda.dll" : "libonnxruntime_providers_cuda.so";
  return existsSync(join(dir, file));
}

/**
 * How the model's bytes are found: external data of an in-memory graph is resolved in
 * `externalDataDir`; `sourceFiles` are the files its weights came from (the prepacked cache's key).
 */
export interface ModelLocation {
  externalDataDir?: string | null;
  sourceFiles?: readonly string[];
}

function sessionOptions(provider: ExecutionProvider, { threads, prepack, profileFilePrefix }: OrtSessionOptions, location: ModelLocation): ort.InferenceSession.SessionOptions {
  if (threads !== undefined && !(Number.isInteger(threads) && threads > 0)) {
    throw new ExecutionProviderError(`threads must be a positive integer, got ${threads}`);
  }
  const session: Record<string, string> = {};
  if (location.externalDataDir) session.model_external_initializers_file_folder_path = location.externalDataDir;
  // Prepacking puts every Gemm weight in MLAS's blocked layout once (the file mapping it came
  // from is then dropped); without it each call packs again: 1.5-1.8x slower decode steps at
  // batch 8 on the 0.5B shape, for about the same resident memory.
  if (provider === "cpu" && prepack === false) session.disable_prepacking = "1";
  return {
    executionProviders: [provider],
    graphOptimizationLevel: "all",
    ...(threads === undefined ? {} : { intraOpNumThreads: threads, interOpNumThreads: 1 }),
    ...(profileFilePrefix === undefined ? {} : { enableProfiling: true, profileFilePrefix }),
    ...(Object.keys(session).length > 0 ? { extra: { session } } : {}),
  };
}

const ortCreate = (model: string | Uint8Array, options: ort.InferenceSession.SessionOptions) =>
  typeof model === "string" ? ort.InferenceSession.create(model, options) : ort.InferenceSession.create(model, options);

/** Runs `open`, naming `source` in the error when ONNX Runtime cannot load the model. */
async function loading(source: string, open: () => Promise<ort.InferenceSession>): Promise<ort.InferenceSession> {
  try {
    return await open();
  } catch (err) {
    throw new ModelFormatError(source, `ONNX Runtime cannot load the model: ${(err as Error).message}`);
  }
}

/** Opens `model` (a path, or the bytes of a model with inline weights). */
export async function openOrtSession(
  model: string | Uint8Array,
  options: OrtSessionOptions = {},
  location: ModelLocation = {},
): Promise<{ session: ort.InferenceSession; provider: ExecutionProvider }> {
  const choice = options.executionProvider ?? "auto";
  if (!(EXECUTION_PROVIDER_CHOICES as readonly string[]).includes(choice)) {
    throw new ExecutionProviderError(`execution provider must be one of ${EXECUTION_PROVIDER_CHOICES.join(", ")}, got ${JSON.stringify(choice)}`);
  }
  const log = options.log ?? (() => {});
  const source = typeof model === "string" ? model : "<in-memory model>";
  if (typeof model === "string" && !existsSync(model)) throw new ModelFormatError(model, "no such ONNX model file");

  if (choice !== "cpu") {
    const installed = cudaProviderInstalled();
    if (installed) {
      try {
        const session = await ortCreate(model, sessionOptions("cuda", options, location));
        log(`onnxruntime: CUDA execution provider for ${source}`);
        if (options.prepackedCacheDir !== undefined) log("onnxruntime: prepacked cache not used: weights are packed only on the CPU");
        return { session, provider: "cuda" };
      } catch (err) {
        if (choice === "cuda") throw new ExecutionProviderError(`CUDA execution provider failed for ${source}: ${(err as Error).message}`);
        log(`onnxruntime: CUDA execution provider failed (${(err as Error).message}); falling back to CPU for ${source}`);
      }
    } else if (choice === "cuda") {
      throw new ExecutionProviderError("CUDA execution provider is not installed: reinstall onnxruntime-node with ONNXRUNTIME_NODE_INSTALL=cuda12");
    } else {
      log(`onnxruntime: CUDA provider not installed; CPU execution provider for ${source}`);
    }
  }
  const cpuOptions = sessionOptions("cpu", options, location);
  const cacheable = options.prepackedCacheDir !== undefined && options.prepack !== false && typeof model !== "string" && (location.sourceFiles?.length ?? 0) > 0;
  const session = await loading(source, () =>
    cacheable
      ? openPrepackedSession({ bytes: model, sourceFiles: location.sourceFiles! }, { cacheDir: options.prepackedCacheDir!, sessionOptions: cpuOptions, log })
      : ortCreate(model, cpuOptions),
  );
  if (choice === "cpu") log(`onnxruntime: CPU execution provider for ${source}`);
  return { session, provider: "cpu" };
}

/**
 * Opens small in-memory graphs that work together (a step's distribution work): the first as
 * `options` say, the rest on the provider it got, so all run in one place. A failure releases
 * the sessions already opened.
 */
export async function openGraphSet(graphs: readonly Uint8Array[], options: OrtSessionOptions): Promise<{ sessions: ort.InferenceSession[]; provider: ExecutionProvider }> {
  const sessions: ort.InferenceSession[] = [];
  let provider: ExecutionProvider | undefined;
  try {
    for (const graph of graphs) {
      const opened = await openOrtSession(graph, { ...options, executionProvider: provider ?? options.executionProvider });
      sessions.push(opened.session);
      provider = opened.provider;
    }
  } catch (err) {
    // The failure to report is the open's, not a release's.
    await Promise.allSettled(sessions.map((s) => s.release()));
    throw err;
  }
  if (!provider) throw new ExecutionProviderError("openGraphSet needs at least one graph");
  return { sessions, provider };
}
