// A Hugging Face model directory (config.json + model.safetensors, or shards listed in
// model.safetensors.index.json) read into a validated config and float32 weights, and
// written back. Shapes are checked against the config from the headers alone, before any
// tensor data is read, so a wrong file fails in milliseconds with the tensor named.
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, realpathSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { Worker } from "node:worker_threads";
import { basename, join } from "node:path";
import { ModelFormatError } from "#core/model/errors.ts";
import { parseModelConfig, readModelConfig, type ModelConfig } from "#core/model/config.ts";
import { expectedWeights, type Float32Tensor, type WeightMap } from "#core/model/weights.ts";
import {
  elementCount,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensorsFrom,
  type SafetensorsDtype,
  type SafetensorsEntry,
  type TensorSource,
} from "./safetensors.ts";

export const CONFIG_FILE = "config.json";
export const SINGLE_WEIGHTS_FILE = "model.safetensors";
export const WEIGHTS_INDEX_FILE = "model.safetensors.index.json";
const SHARD_PATTERN = /^model-\d{5}-of-\d{5}\.safetensors$/;

export interface ModelDir {
  dir: string;
  config: ModelConfig;
  /** Every tensor of expectedWeights(config), in that order, as float32. */
  weights: WeightMap;
}

/** Where the weights live: one file, or shards named by an index. */
interface WeightLayout {
  index: string | null;
  /** Absolute shard paths in a stable order. */
  files: string[];
  /** For sharded models: tensor name -> shard path, as the index claims. */
  claimed: Map<string, string> | null;
}

const sameShape = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);
const fmtShape = (s: readonly number[]) => `[${s.join(", ")}]`;

function readJsonObject(path: string, what: string): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new ModelFormatError(path, `cannot read ${what}: ${(err as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new ModelFormatError(path, `${what} must be a JSON object`);
  return json as Record<string, unknown>;
}

function parseIndex(path: string, dir: string): WeightLayout {
  const weightMap = readJsonObject(path, "safetensors index").weight_map;
  if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
    throw new ModelFormatError(path, `"weight_map" must be an object mapping tensor names to shard files`);
  }
  const claimed = new Map<string, string>();
  const files: string[] = [];
  for (const [name, file] of Object.entries(weightMap)) {
    // Shard names are plain file names; anything else could reach outside the model directory.
    if (typeof file !== "string" || file !== basename(file) || file.startsWith(".")) {
      throw new ModelFormatError(path, `"weight_map"."${name}" must be a shard file name in the same directory, got ${JSON.stringify(file)}`);
    }
    const shard = join(dir, file);
    if (!files.includes(shard)) {
      if (!existsSync(shard)) throw new ModelFormatError(path, `shard ${file} (holding "${name}") does not exist`);
      files.push(shard);
    }
    claimed.set(name, shard);
  }
  return { index: path, files, claimed };
}

function locateWeights(dir: string): WeightLayout {
  const single = join(dir, SINGLE_WEIGHTS_FILE);
  if (existsSync(single)) return { index: null, files: [single], claimed: null };
  const index = join(dir, WEIGHTS_INDEX_FILE);
  if (existsSync(index)) return parseIndex(index, dir);
  const hint = existsSync(join(dir, "pytorch_model.bin")) ? "; pytorch_model.bin is not supported, convert it to safetensors" : "";
  throw new ModelFormatError(dir, `no ${SINGLE_WEIGHTS_FILE} or ${WEIGHTS_INDEX_FILE} in the model directory${hint}`);
}

/** The safetensors files a model directory's weights are read from (one, or an index's shards), as the directory names them. */
export function modelWeightFiles(dir: string): string[] {
  return locateWeights(dir).files;
}

/** Tensors that checkpoints carry but the model recomputes or shares. */
function isHarmlessExtra(name: string, config: ModelConfig): boolean {
  if (name.endsWith(".rotary_emb.inv_freq")) return true;
  return config.tieWordEmbeddings && name === "lm_head.weight";
}

/** Checks every header against the config; returns which file holds each expected tensor. */
function planReads(layout: WeightLayout, config: ModelConfig, configPath: string): Map<string, string[]> {
  const expected = expectedWeights(config);
  const found = new Map<string, string>();
  for (const file of layout.files) {
    const entries: SafetensorsEntry[] = readSafetensorsHeader(file).entries;
    for (const { name, shape } of entries) {
      const want = expected.get(name);
      if (want === undefined) {
        if (isHarmlessExtra(name, config)) continue;
        throw new ModelFormatError(
          file,
          `unexpected tensor "${name}" ${fmtShape(shape)}: a ${config.modelType} model with this ${CONFIG_FILE} has no such weight` +
            (name.endsWith(".bias") ? " (check attention_bias / model_type)" : ""),
        );
      }
      if (!sameShape(shape, want)) {
        throw new ModelFormatError(file, `tensor "${name}" has shape ${fmtShape(shape)} but ${configPath} implies ${fmtShape(want)}`);
      }
      const previous = found.get(name);
      if (previous) throw new ModelFormatError(file, `tensor "${name}" also appears in ${previous}`);
      found.set(name, file);
    }
  }
  if (layout.claimed) {
    for (const [name, shard] of layout.claimed) {
      if (found.has(name) && found.get(name) !== shard) {
        throw new ModelFormatError(layout.index!, `claims "${name}" is in ${basename(shard)} but it is in ${basename(found.get(name)!)}`);
      }
      if (!found.has(name) && expected.has(name)) {
        throw new ModelFormatError(layout.index!, `claims "${name}" is in ${basename(shard)} but that shard does not contain it`);
      }
    }
  }
  const missing = [...expected.keys()].filter((name) => !found.has(name));
  if (missing.length > 0) {
    const where = layout.index ?? layout.files[0];
    const list = missing.slice(0, 4).map((n) => `"${n}" ${fmtShape(expected.get(n)!)}`).join(", ");
    throw new ModelFormatError(where, `missing ${missing.length} tensor(s) the config requires: ${list}${missing.length > 4 ? ", ..." : ""}`);
  }
  const perFile = new Map<string, string[]>();
  for (const [name, file] of found) {
    if (!perFile.has(file)) perFile.set(file, []);
    perFile.get(file)!.push(name);
  }
  return perFile;
}

/** Reads and validates a Hugging Face model directory. */
export function loadModelDir(dir: string): ModelDir {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new ModelFormatError(dir, "model directory does not exist");
  const configPath = join(dir, CONFIG_FILE);
  if (!existsSync(configPath)) throw new ModelFormatError(configPath, `missing: a model directory needs ${CONFIG_FILE}`);
  const config = readModelConfig(configPath);
  const plan = planReads(locateWeights(dir), config, configPath);
  const loaded = new Map<string, Float32Tensor>();
  for (const [file, names] of plan) {
    const wanted = new Set(names);
    for (const [name, t] of readSafetensors(file, { select: (n) => wanted.has(n) }).tensors) {
      loaded.set(name, { shape: t.shape, data: t.data });
    }
  }
  const weights: WeightMap = new Map();
  for (const name of expectedWeights(config).keys()) weights.set(name, loaded.get(name)!);
  return { dir, config, weights };
}

/** Where one float32 tensor's bytes lie in a safetensors file, for a runtime that reads them itself. */
export interface StoredTensor {
  shape: number[];
  /**
   * The shard's path with links resolved: a Hugging Face cache links every file of a snapshot
   * into its blobs/ folder, and ONNX Runtime refuses external data that resolves outside the
   * folder it is told to read from.
   */
  path: string;
  /** Byte offset of the tensor's data in that file, and its length. */
  offset: number;
  byteLength: number;
}

/**
 * The same checks as loadModelDir, reading headers only: config and, for each expected tensor,
 * where its bytes lie. Null when some tensor is not stored as float32 (F16, BF16), which needs
 * decoding; the caller then loads the directory instead.
 */
export function locateModelWeights(dir: string): { config: ModelConfig; tensors: Map<string, StoredTensor> } | null {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new ModelFormatError(dir, "model directory does not exist");
  const configPath = join(dir, CONFIG_FILE);
  if (!existsSync(configPath)) throw new ModelFormatError(configPath, `missing: a model directory needs ${CONFIG_FILE}`);
  const config = readModelConfig(configPath);
  const located = new Map<string, StoredTensor>();
  for (const [file, names] of planReads(locateWeights(dir), config, configPath)) {
    const header = readSafetensorsHeader(file);
    const path = realpathSync(file);
    const wanted = new Set(names);
    for (const entry of header.entries) {
      if (!wanted.has(entry.name)) continue;
      if (entry.dtype !== "F32" || entry.end - entry.begin !== elementCount(entry.shape) * 4) return null;
      located.set(entry.name, { shape: entry.shape, path, offset: header.dataStart + entry.begin, byteLength: entry.end - entry.begin });
    }
  }
  const tensors = new Map<string, StoredTensor>();
  for (const name of expectedWeights(config).keys()) tensors.set(name, located.get(name)!);
  return { config, tensors };
}

// ---------------------------------------------------------------------------------------
// Writing

export interface WriteModelDirOptions {
  /** The config.json contents: an object, or JSON text written verbatim. */
  configJson: Record<string, unknown> | string;
  /** Exactly the tensors of expectedWeights(config); sources let a caller produce them one at a time. */
  weights: WeightMap | readonly TensorSource[];
  dtype?: SafetensorsDtype;
  /** When given, weights are split into shards of at most this many bytes (one tensor may exceed it) plus an index. */
  shardBytes?: number;
}

function asSources(weights: WeightMap | readonly TensorSource[]): TensorSource[] {
  if (!(weights instanceof Map)) return [...weights];
  return [...weights].map(([name, t]) => ({ name, shape: t.shape, data: () => t.data }));
}

/** Refuses to write a directory that loadModelDir would reject. */
function checkAgainstConfig(sources: TensorSource[], config: ModelConfig, configPath: string): TensorSource[] {
  const expected = expectedWeights(config);
  const byName = new Map(sources.map((s) => [s.name, s]));
  for (const s of sources) {
    const want = expected.get(s.name);
    if (!want) throw new ModelFormatError(configPath, `weight "${s.name}" is not part of a ${config.modelType} model with this config`);
    if (!sameShape(s.shape, want)) throw new ModelFormatError(configPath, `weight "${s.name}" has shape ${fmtShape(s.shape)} but the config implies ${fmtShape(want)}`);
  }
  const missing = [...expected.keys()].filter((n) => !byName.has(n));
  if (missing.length > 0) throw new ModelFormatError(configPath, `weights are missing ${missing.length} tensor(s), e.g. "${missing[0]}"`);
  return [...expected.keys()].map((n) => byName.get(n)!);
}

/** Greedy split in model order: a shard is closed when the next tensor would overflow it. */
function splitShards(sources: TensorSource[], bytesPerElement: number, shardBytes: number): TensorSource[][] {
  const shards: TensorSource[][] = [];
  let current: TensorSource[] = [];
  let size = 0;
  for (const s of sources) {
    const bytes = elementCount(s.shape) * bytesPerElement;
    if (current.length > 0 && size + bytes > shardBytes) {
      shards.push(current);
      current = [];
      size = 0;
    }
    current.push(s);
    size += bytes;
  }
  if (current.length > 0) shards.push(current);
  return shards;
}

/** Removes weight files a previous write left, so a stale single file cannot shadow new shards. */
function removeStaleWeights(dir: string): void {
  for (const name of readdirSync(dir)) {
    if (name === SINGLE_WEIGHTS_FILE || name === WEIGHTS_INDEX_FILE || SHARD_PATTERN.test(name)) rmSync(join(dir, name));
  }
}

/** Writes config.json and the weights (one file, or shards with an index); returns the weight files written. */
export function writeModelDir(dir: string, options: WriteModelDirOptions): { files: string[] } {
  const configPath = join(dir, CONFIG_FILE);
  const configText = typeof options.configJson === "string" ? options.configJson : `${JSON.stringify(options.configJson, null, 2)}\n`;
  let raw: unknown;
  try {
    raw = JSON.parse(configText);
  } catch (err) {
    throw new ModelFormatError(configPath, `malformed JSON: ${(err as Error).message}`);
  }
  const config = parseModelConfig(raw, configPath);
  const sources = checkAgainstConfig(asSources(options.weights), config, configPath);
  const dtype = options.dtype ?? "F32";
  mkdirSync(dir, { recursive: true });
  removeStaleWeights(dir);
  writeFileSync(configPath, configText);
  if (options.shardBytes === undefined) {
    const file = join(dir, SINGLE_WEIGHTS_FILE);
    writeSafetensorsFrom(file, sources, { dtype });
    return { files: [file] };
  }
  const bytesPerElement = dtype === "F32" ? 4 : 2;
  const shards = splitShards(sources, bytesPerElement, options.shardBytes);
  const weightMap: Record<string, string> = {};
  const files: string[] = [];
  shards.forEach((shard, i) => {
    const name = `model-${String(i + 1).padStart(5, "0")}-of-${String(shards.length).padStart(5, "0")}.safetensors`;
    writeSafetensorsFrom(join(dir, name), shard, { dtype });
    for (const s of shard) weightMap[s.name] = name;
    files.push(join(dir, name));
  });
  const totalSize = sources.reduce((n, s) => n + elementCount(s.shape) * bytesPerElement, 0);
  writeFileSync(join(dir, WEIGHTS_INDEX_FILE), `${JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2)}\n`);
  return { files };
}

// ---------------------------------------------------------------------------------------
// Fingerprint

const FINGERPRINT_FILES = ["tokenizer.json", "tokenizer_config.json"];

function hashFileTail(hash: ReturnType<typeof createHash>, path: string, from: number): void {
  const fd = openSync(path, "r");
  try {
    const buf = new Uint8Array(16 << 20);
    for (let pos = from; ; ) {
      const got = readSync(fd, buf, 0, buf.length, pos);
      if (got === 0) break;
      hash.update(buf.subarray(0, got));
      pos += got;
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Identifies a model directory's contents, so the trainer and the inference service can
 * check they hold the same expert. Covers, as sha256: config.json byte for byte; the index
 * when sharded; for every weight file its name, its full header (names, dtypes, shapes,
 * offsets, metadata) and a sha256 of its whole data section; and tokenizer.json and
 * tokenizer_config.json when present. Hashing runs at about 2 GB/s here, i.e. about one
 * second per 0.5B float32 parameters, less than reading the model does.
 */
export function modelFingerprint(dir: string): string {
  const digests = new Map<string, Uint8Array>();
  for (const { file, from } of weightDataSections(dir)) {
    const data = createHash("sha256");
    hashFileTail(data, file, from);
    digests.set(file, data.digest());
  }
  return combineFingerprint(dir, digests);
}

/**
 * modelFingerprint with the data sections hashed on worker threads, so a service can load
 * its models meanwhile instead of waiting for gigabytes of sha256; the same value.
 */
export async function modelFingerprintInBackground(dir: string): Promise<string> {
  const sections = weightDataSections(dir);
  const digests = await Promise.all(sections.map(({ file, from }) => tailDigestInWorker(file, from)));
  return combineFingerprint(dir, new Map(sections.map(({ file }, i) => [file, digests[i]])));
}

/** Every weight file and where its data section starts. */
function weightDataSections(dir: string): { file: string; from: number }[] {
  const configPath = join(dir, CONFIG_FILE);
  if (!existsSync(configPath)) throw new ModelFormatError(configPath, `missing: a model directory needs ${CONFIG_FILE}`);
  return locateWeights(dir).files.map((file) => ({ file, from: readSafetensorsHeader(file).dataStart }));
}

/** The fingerprint, given the sha256 of each weight file's data section. */
function combineFingerprint(dir: string, dataDigests: ReadonlyMap<string, Uint8Array>): string {
  const hash = createHash("sha256");
  const configPath = join(dir, CONFIG_FILE);
  hash.update(`lightreasoner-model-fingerprint-v1\n${CONFIG_FILE}\n`).update(readFileSync(configPath));
  const layout = locateWeights(dir);
  if (layout.index) hash.update(`\n${WEIGHTS_INDEX_FILE}\n`).update(readFileSync(layout.index));
  for (const file of layout.files) {
    const digest = dataDigests.get(file);
    if (!digest) throw new ModelFormatError(file, "the weight files changed while the model was fingerprinted");
    hash.update(`\n${basename(file)}\n`).update(readSafetensorsHeader(file).headerBytes).update(digest);
  }
  for (const name of FINGERPRINT_FILES) {
    const path = join(dir, name);
    if (existsSync(path)) hash.update(`\n${name}\n`).update(readFileSync(path));
  }
  return hash.digest("hex");
}

/** Plain CommonJS, so the worker needs no TypeScript loader: sha256 of a file from an offset on. */
const TAIL_DIGEST_WORKER = `
const { parentPort, workerData } = require("node:worker_threads");
const { createHash } = require("node:crypto");
const { openSync, readSync, closeSync } = require("node:fs");
const hash = createHash("sha256");
const fd = openSync(workerData.path, "r");
try {
  const buf = new Uint8Array(16 << 20);
  for (let pos = workerData.from; ; ) {
    const got = readSync(fd, buf, 0, buf.length, pos);
    if (got === 0) break;
    hash.update(buf.subarray(0, got));
    pos += got;
  }
} finally {
  closeSync(fd);
}
parentPort.postMessage(hash.digest());
`;

function tailDigestInWorker(path: string, from: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(TAIL_DIGEST_WORKER, { eval: true, workerData: { path, from } });
    worker.once("message", (digest: Uint8Array) => resolve(new Uint8Array(digest)));
    worker.once("error", (err) => reject(new ModelFormatError(path, `cannot hash the weights: ${err.message}`)));
    worker.once("exit", (code) => (code === 0 ? undefined : reject(new ModelFormatError(path, `the hashing worker exited with code ${code}`))));
  });
}
