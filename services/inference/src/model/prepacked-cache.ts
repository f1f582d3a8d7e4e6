// ONNX Runtime's prepacked weights kept on disk between starts. Opening a session on the CPU
// packs every Gemm weight into MLAS's blocked layout, single-threaded on the calling (main)
// thread: about 3 s of the 0.5B-shaped expert's start. ONNX Runtime can save the optimized
// graph with the packed weights in its external data file; a session opened on that file maps
// them from it instead of packing again, so they are also file pages that replicas on one host
// share through the page cache. An entry costs disk: the packed weights and a copy of the
// originals (ONNX Runtime writes both), about twice the model's float32 bytes. ONNX Runtime
// warns, when it writes one, that the saved graph suits only this machine: the entry's name
// covers the CPU, so another machine sharing the folder writes its own.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, statfsSync } from "node:fs";
import { arch, cpus } from "node:os";
import { basename, join } from "node:path";
import { createRequire } from "node:module";
import * as ort from "onnxruntime-node";

/** Raise when the entry's layout or what goes into its key changes: older entries are then never read. */
const FORMAT_VERSION = 1;
const MODEL_FILE = "model.onnx";
const WEIGHTS_FILE = "weights.bin";
/** Disk an entry needs, as a multiple of its source weights (originals copied + packed copy), checked before writing one. */
const DISK_PER_WEIGHT_BYTE = 2.5;
const BUILDING_PREFIX = ".building-";
const ABANDONED_BUILD_MS = 60 * 60 * 1000;

/** What a cached session is made from. */
export interface PrepackedSource {
  /** The graph as ONNX Runtime would be given it (weights inline or as external data references). */
  bytes: Uint8Array;
  /** Files its weights are read from (the safetensors shards), as the model directory names them. */
  sourceFiles: readonly string[];
}

/**
 * An entry's folder name, `<tag>-<state>`. The tag covers what makes a different model or
 * layout (the graph's bytes, the source files' names, this CPU, this ONNX Runtime, the options
 * that shape the optimized graph); the state covers the source files' size, inode, modification
 * and change times. Entries with the same tag and another state are older versions of the
 * same files, which a new entry replaces.
 */
export function prepackedEntryName(source: PrepackedSource, sessionOptions: ort.InferenceSession.SessionOptions): string {
  const tag = createHash("sha256")
    .update(JSON.stringify({ version: FORMAT_VERSION, onnxruntime: onnxRuntimeVersion(), cpu: cpuIdentity(), options: graphShapingOptions(sessionOptions), files: source.sourceFiles }))
    .update(source.bytes)
    .digest("hex");
  const state = source.sourceFiles.map((file) => {
    const stat = statSync(file, { bigint: true });
    // ctime too: every write moves it and nothing sets it back, where mtime can be set to anything.
    return [String(stat.size), String(stat.ino), String(stat.mtimeNs), String(stat.ctimeNs)];
  });
  return `${tag.slice(0, 16)}-${createHash("sha256").update(JSON.stringify(state)).digest("hex").slice(0, 16)}`;
}

/** The session options that change what ONNX Runtime writes (not threads, logging or profiling; not where the source's external data is). */
function graphShapingOptions(options: ort.InferenceSession.SessionOptions): unknown {
  return { providers: options.executionProviders, level: options.graphOptimizationLevel, session: withoutExternalFolder(options).extra?.session };
}

/** The packed layout depends on the kernels MLAS picked for this CPU: its model and instruction-set flags (x86 and Arm spellings). */
function cpuIdentity(): string {
  try {
    const info = readFileSync("/proc/cpuinfo", "utf8");
    const fields = ["vendor_id", "model name", "flags", "CPU implementer", "CPU part", "CPU variant", "Features"];
    return [arch(), ...fields.map((name) => info.match(new RegExp(`^${name}\\s*:\\s*(.*)$`, "m"))?.[1] ?? "")].join("|");
  } catch {
    return `${arch()}|${cpus()[0]?.model ?? "unknown"}`;
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
  const seconds = () => ((performance.now() - started) / 1000).toFixed(1);
  // What every way around the cache falls back to: the session opened as without a cache.
  const uncached = () => ort.InferenceSession.create(source.bytes, sessionOptions);
  let name: string;
  try {
    const refusal = unusableCacheDir(cacheDir);
    if (refusal) {
      log(`onnxruntime: prepacked cache not used: ${refusal}`);
      return await uncached();
    }
    name = prepackedEntryName(source, sessionOptions);
  } catch (err) {
    log(`onnxruntime: prepacked cache not used (${(err as Error).message})`);
    return uncached();
  }
  const entry = join(cacheDir, name);
  if (existsSync(join(entry, MODEL_FILE))) {
    try {
      // The entry's graph is optimized already; optimizing it again could also rename the nodes its packed weights are saved under.
      const session = await ort.InferenceSession.create(join(entry, MODEL_FILE), { ...withoutExternalFolder(sessionOptions), graphOptimizationLevel: "disabled" });
      log(`onnxruntime: prepacked weights read from ${entry} in ${seconds()} s`);
      return session;
    } catch (err) {
      log(`onnxruntime: prepacked cache entry ${entry} is unreadable (${(err as Error).message}); writing it again`);
      removeQuietly(entry);
    }
  }
  removeAbandonedBuilds(cacheDir);
  const room = freeBytes(cacheDir);
  const needed = DISK_PER_WEIGHT_BYTE * (source.sourceFiles.reduce((sum, f) => sum + statSync(f).size, 0) + source.bytes.byteLength);
  if (room !== null && room < needed) {
    log(`onnxruntime: prepacked cache not written: ${cacheDir} has ${gib(room)} free, an entry needs about ${gib(needed)}`);
    return uncached();
  }
  let building: string | undefined;
  let session: ort.InferenceSession;
  try {
    // A folder of this process's own (mkdtemp): replicas that share the cache never write into one another's.
    building = mkdtempSync(join(cacheDir, `${BUILDING_PREFIX}${name}-`));
    session = await ort.InferenceSession.create(source.bytes, savingOptions(sessionOptions, join(building, MODEL_FILE)));
  } catch (err) {
    if (building) removeQuietly(building);
    log(`onnxruntime: prepacked cache not written (${(err as Error).message}); opening without it`);
    return uncached();
  }
  try {
    publish(building, entry, cacheDir);
    log(`onnxruntime: prepacked weights written to ${entry} in ${seconds()} s (${gib(statSync(join(entry, WEIGHTS_FILE)).size)}); later starts read them`);
  } catch (err) {
    removeQuietly(building);
    log(`onnxruntime: prepacked cache entry not kept (${(err as Error).message})`);
  }
  return session;
}

/**
 * Why `dir` must not hold the cache, or null when it may: a cached graph is code ONNX Runtime
 * runs, so the folder must be this user's and closed to other users' writes.
 */
function unusableCacheDir(dir: string): string | null {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const stat = statSync(dir);
  if (!stat.isDirectory()) return `${dir} is not a directory`;
  const uid = process.getuid?.();
  if (uid !== undefined && stat.uid !== uid) return `${dir} belongs to uid ${stat.uid}, not to this process (uid ${uid})`;
  if ((stat.mode & 0o002) !== 0) return `${dir} is writable by every user (mode ${(stat.mode & 0o777).toString(8)})`;
  return null;
}

/** Build folders left by a process that died while writing (an hour is far longer than any write). */
function removeAbandonedBuilds(cacheDir: string): void {
  for (const name of readdirSync(cacheDir)) {
    if (!name.startsWith(BUILDING_PREFIX)) continue;
    const path = join(cacheDir, name);
    try {
      if (Date.now() - statSync(path).mtimeMs > ABANDONED_BUILD_MS) removeQuietly(path);
    } catch {
      // Gone already: another process cleaned it up.
    }
  }
}

/** The options that also make ONNX Runtime write the optimized graph and its packed weights to `modelPath`. */
function savingOptions(options: ort.InferenceSession.SessionOptions, modelPath: string): ort.InferenceSession.SessionOptions {
  return {
    ...options,
    optimizedModelFilePath: modelPath,
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

/** Moves a finished entry into place (a rename: readers never see half of one) and drops the older versions of the same files. */
function publish(building: string, entry: string, cacheDir: string): void {
  try {
    renameSync(building, entry);
  } catch (err) {
    // Another process published the same entry first: theirs is as good as ours.
    if (!existsSync(join(entry, MODEL_FILE))) throw err;
    removeQuietly(building);
  }
  const tag = basename(entry).split("-")[0];
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
