// ONNX Runtime's prepacked weights kept on disk between starts. Opening a session on the CPU
// packs every Gemm weight into MLAS's blocked layout, single-threaded on the calling (main)
// thread: about 3 s of the 0.5B-shaped expert's start. ONNX Runtime can save the optimized
// graph with the packed weights in its external data file; a session opened on that file maps
// them from it instead of packing again, so they are also file pages that replicas on one host
// share through the page cache. An entry costs disk: the packed weights and a copy of the
// originals (ONNX Runtime writes both), about twice the model's float32 bytes.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, statfsSync } from "node:fs";
import { arch, cpus } from "node:os";
import { join } from "node:path";
import { createRequire } from "node:module";
import * as ort from "onnxruntime-node";

/** Raise when the entry's layout or what goes into its key changes: older entries are then never read. */
const FORMAT_VERSION = 1;
const MODEL_FILE = "model.onnx";
const WEIGHTS_FILE = "weights.bin";
/** Disk an entry needs, as a multiple of its source weights (originals copied + packed copy), checked before writing one. */
const DISK_PER_WEIGHT_BYTE = 2.5;

/** What a cached session was made from: any change to one of these makes another entry. */
export interface PrepackedSource {
  /** The graph as ONNX Runtime would be given it (weights inline or as external data references). */
  bytes: Uint8Array;
  /** Files its weights were read from (the safetensors shards): their identity and modification are part of the key. */
  sourceFiles: readonly string[];
  /** Settings that change the optimized graph. */
  graphOptimizationLevel: string;
}

/** The key of an entry: the graph's bytes, each source file's identity, this CPU and this ONNX Runtime. */
export function prepackedCacheKey(source: PrepackedSource): string {
  const files = source.sourceFiles.map((file) => {
    const stat = statSync(file, { bigint: true });
    // ctime too: it moves on every write and cannot be set back, where mtime can.
    return { path: realpathSync(file), size: String(stat.size), modified: String(stat.mtimeNs), changed: String(stat.ctimeNs), inode: String(stat.ino) };
  });
  const hash = createHash("sha256");
  hash.update(JSON.stringify({ version: FORMAT_VERSION, onnxruntime: onnxRuntimeVersion(), cpu: cpuIdentity(), level: source.graphOptimizationLevel, files }));
  hash.update(source.bytes);
  return hash.digest("hex").slice(0, 32);
}

/** Entries of one model share a prefix: a new entry for the same files replaces the stale ones. */
function sourceTag(sourceFiles: readonly string[]): string {
  return createHash("sha256").update(JSON.stringify(sourceFiles.map((f) => realpathSync(f)).sort())).digest("hex").slice(0, 12);
}

/** The packed layout depends on the instruction set MLAS picked for this CPU: the model and its flags. */
function cpuIdentity(): string {
  try {
    const info = readFileSync("/proc/cpuinfo", "utf8");
    const field = (name: string) => info.match(new RegExp(`^${name}\\s*:\\s*(.*)$`, "m"))?.[1] ?? "";
    return `${arch()} ${field("model name")} ${field("flags")}`;
  } catch {
    return `${arch()} ${cpus()[0]?.model ?? "unknown"}`;
  }
}

function onnxRuntimeVersion(): string {
  const require = createRequire(import.meta.url);
  return (JSON.parse(readFileSync(require.resolve("onnxruntime-node/package.json"), "utf8")) as { version: string }).version;
}

export interface PrepackedOpenOptions {
  /** The cache's folder (created when missing). */
  cacheDir: string;
  /** The session options for the CPU, as for an uncached session (model_external_initializers_file_folder_path included). */
  sessionOptions: ort.InferenceSession.SessionOptions;
  log: (message: string) => void;
}

/**
 * A CPU session for `source`, from its cache entry when one exists, else opened the usual way
 * while ONNX Runtime writes the entry for the next start. The cache only saves time: an entry
 * that cannot be read is removed and written again, and one that cannot be written (no room,
 * a read-only folder) leaves a log line and an uncached session.
 */
export async function openPrepackedSession(source: PrepackedSource, options: PrepackedOpenOptions): Promise<ort.InferenceSession> {
  const { cacheDir, sessionOptions, log } = options;
  const started = performance.now();
  const key = prepackedCacheKey(source);
  const tag = sourceTag(source.sourceFiles);
  const entry = join(cacheDir, `${tag}-${key}`);
  const seconds = () => ((performance.now() - started) / 1000).toFixed(1);
  if (existsSync(join(entry, MODEL_FILE))) {
    try {
      // The entry's graph is optimized already: running the optimizers again would only cost time.
      const session = await ort.InferenceSession.create(join(entry, MODEL_FILE), { ...withoutExternalFolder(sessionOptions), graphOptimizationLevel: "disabled" });
      log(`onnxruntime: prepacked weights read from ${entry} in ${seconds()} s`);
      return session;
    } catch (err) {
      log(`onnxruntime: prepacked cache entry ${entry} is unreadable (${(err as Error).message}); writing it again`);
      removeQuietly(entry);
    }
  }
  const room = freeBytes(cacheDir);
  const needed = DISK_PER_WEIGHT_BYTE * (source.sourceFiles.reduce((sum, f) => sum + statSync(f).size, 0) + source.bytes.byteLength);
  if (room !== null && room < needed) {
    log(`onnxruntime: prepacked cache not written: ${cacheDir} has ${gib(room)} free, an entry needs about ${gib(needed)}`);
    return ort.InferenceSession.create(source.bytes, sessionOptions);
  }
  const building = join(cacheDir, `.building-${tag}-${key}-${process.pid}`);
  let session: ort.InferenceSession;
  try {
    mkdirSync(building, { recursive: true, mode: 0o700 });
    session = await ort.InferenceSession.create(source.bytes, savingOptions(sessionOptions, join(building, MODEL_FILE)));
  } catch (err) {
    removeQuietly(building);
    log(`onnxruntime: prepacked cache not written (${(err as Error).message}); opening without it`);
    return ort.InferenceSession.create(source.bytes, sessionOptions);
  }
  try {
    publish(building, entry, tag, cacheDir);
    log(`onnxruntime: prepacked weights written to ${entry} in ${seconds()} s (${gib(statSync(join(entry, WEIGHTS_FILE)).size)}); later starts read them`);
  } catch (err) {
    removeQuietly(building);
    log(`onnxruntime: prepacked cache entry not kept (${(err as Error).message})`);
  }
  return session;
}

/** The options that also make ONNX Runtime write the optimized graph and its packed weights to `modelPath`. */
function savingOptions(options: ort.InferenceSession.SessionOptions, modelPath: string): ort.InferenceSession.SessionOptions {
  return {
    ...options,
    optimizedModelFilePath: modelPath,
    // The saved graph holds optimizations for this CPU; the key names the CPU, so the warning ONNX Runtime prints about that does not apply.
    logSeverityLevel: 3,
    extra: {
      ...options.extra,
      session: {
        ...(options.extra?.session as Record<string, string> | undefined),
        optimized_model_external_initializers_file_name: WEIGHTS_FILE,
        optimized_model_external_initializers_min_size_in_bytes: "1024",
        save_external_prepacked_constant_initializers: "1",
      },
    },
  };
}

/** Moves a finished entry into place (a rename: readers never see half of one) and drops the same model's stale entries. */
function publish(building: string, entry: string, tag: string, cacheDir: string): void {
  try {
    renameSync(building, entry);
  } catch (err) {
    // Another process published the same entry first: theirs is as good as ours.
    if (!existsSync(join(entry, MODEL_FILE))) throw err;
    removeQuietly(building);
  }
  for (const name of readdirSync(cacheDir)) {
    if (name.startsWith(`${tag}-`) && join(cacheDir, name) !== entry) removeQuietly(join(cacheDir, name));
  }
}

/** The cached graph names its own weights file, beside it; the source folder no longer applies. */
function withoutExternalFolder(options: ort.InferenceSession.SessionOptions): ort.InferenceSession.SessionOptions {
  const session = { ...(options.extra?.session as Record<string, string> | undefined) };
  delete session.model_external_initializers_file_folder_path;
  return { ...options, extra: { ...options.extra, session } };
}

function freeBytes(dir: string): number | null {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const stats = statfsSync(dir);
    return stats.bavail * stats.bsize;
  } catch {
    return null;
  }
}

/** Clean-up of the cache's own folders: a path that cannot be removed (or never existed) is no reason to fail a start. */
function removeQuietly(path: string): void {
  try {
    rmSync(path, { recursive: true, force: true });
  } catch {
    // Left for the operator: the cache folder is theirs to clear.
  }
}

const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;
