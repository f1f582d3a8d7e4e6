// An opt-in cache of ONNX Runtime's optimized served graph with its prepacked weights, so a
// restart maps them from a file instead of packing them into fresh heap memory. Measured on
// the 0.5B-shaped expert (bench/ort-prepack-cache.ts): the session's peak resident memory
// drops by ~430 MiB and its creation by ~25% of the CPU time (ONNX Runtime 1.30 still packs
// and hashes each weight to find its saved copy), for ~2.3x the weights on disk.
//
// An entry is keyed by the model's content fingerprint (every weight byte, config and
// tokenizer files), the served graph's bytes, the ONNX Runtime version and the CPU (a graph
// optimized at level "all" may hold kernels for this CPU only), so a changed model never
// meets a stale entry. Entries are written into a private directory and renamed into place
// whole; an entry ONNX Runtime cannot open is logged, removed and rebuilt, and one that cannot
// be written leaves the session prepacked in memory as without the cache.
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import * as ort from "onnxruntime-node";
import type { ServedGraph } from "./export.ts";
import type { OrtSessionOptions } from "./execution-provider.ts";
import { CausalLmSession } from "./session.ts";

const KEY_VERSION = "lightreasoner-prepack-cache-v1";
const MODEL_FILE = "model.onnx";
const DATA_FILE = "model.onnx.data";

/** The entry's name: everything the saved graph and its packed weights depend on. */
export function prepackCacheKey(fingerprint: string, graph: ServedGraph): string {
  const cpu = `${process.arch} ${cpus()[0]?.model ?? "unknown cpu"}`;
  return createHash("sha256")
    .update(`${KEY_VERSION}\nfingerprint ${fingerprint}\nonnxruntime ${ort.env.versions.node ?? "unknown"}\ncpu ${cpu}\noptimization all\n`)
    .update(graph.bytes)
    .digest("hex")
    .slice(0, 32);
}

/** Saves ONNX Runtime's optimized graph and prepacked weights for `graph` into `dir`. */
async function save(graph: ServedGraph, dir: string, options: OrtSessionOptions): Promise<void> {
  const session: Record<string, string> = {
    optimized_model_external_initializers_file_name: DATA_FILE,
    // Every weight goes to the data file, which ONNX Runtime maps when the entry is opened.
    optimized_model_external_initializers_min_size_in_bytes: "1024",
    save_external_prepacked_constant_initializers: "1",
  };
  if (graph.externalDataDir) session.model_external_initializers_file_folder_path = graph.externalDataDir;
  const saving = await ort.InferenceSession.create(graph.bytes, {
    executionProviders: ["cpu"],
    graphOptimizationLevel: "all",
    // It warns that a level "all" graph is for this machine only, which the key already says.
    logSeverityLevel: 3,
    optimizedModelFilePath: join(dir, MODEL_FILE),
    ...(options.threads === undefined ? {} : { intraOpNumThreads: options.threads, interOpNumThreads: 1 }),
    extra: { session },
  });
  await saving.release();
}

/**
 * The session for `graph` opened from the cache entry for (`fingerprint`, graph), building the
 * entry first when there is none or the one there cannot be opened. CPU only, with prepacking:
 * the caller decides (openModelSession skips the cache otherwise).
 */
export async function openThroughPrepackCache(role: string, graph: ServedGraph, fingerprint: string, cacheDir: string, options: OrtSessionOptions): Promise<CausalLmSession> {
  const log = options.log ?? (() => {});
  const entry = join(cacheDir, prepackCacheKey(fingerprint, graph));
  const model = join(entry, MODEL_FILE);
  const cpuOptions: OrtSessionOptions = { ...options, executionProvider: "cpu", log: undefined };
  if (existsSync(model)) {
    try {
      const session = await CausalLmSession.open(model, cpuOptions);
      log(`${role}: prepacked weights mapped from ${entry}`);
      return session;
    } catch (err) {
      log(`${role}: prepack cache entry ${entry} cannot be opened (${(err as Error).message}); removing and rebuilding it`);
      rmSync(entry, { recursive: true, force: true });
    }
  }
  try {
    await writeEntry(role, graph, entry, options);
  } catch (err) {
    // A cache that cannot be written (a full disk, a read-only directory) costs only its benefit.
    log(`${role}: prepack cache entry ${entry} not written (${(err as Error).message}); prepacking in memory`);
    return CausalLmSession.open(graph, cpuOptions);
  }
  const session = await CausalLmSession.open(model, cpuOptions);
  log(`${role}: prepacked weights mapped from ${entry}`);
  return session;
}

/** Saves the entry in a private directory and renames it into place whole. */
async function writeEntry(role: string, graph: ServedGraph, entry: string, options: OrtSessionOptions): Promise<void> {
  mkdirSync(dirname(entry), { recursive: true });
  const partial = `${entry}.partial-${process.pid}-${randomBytes(4).toString("hex")}`;
  mkdirSync(partial);
  try {
    const started = performance.now();
    await save(graph, partial, options);
    try {
      renameSync(partial, entry);
    } catch (err) {
      // Another process renamed its entry (same key, same content) in first: keep that one.
      if (!existsSync(join(entry, MODEL_FILE))) throw err;
    }
    options.log?.(`${role}: prepack cache entry ${entry} written in ${(performance.now() - started).toFixed(0)} ms`);
  } finally {
    rmSync(partial, { recursive: true, force: true });
  }
}
