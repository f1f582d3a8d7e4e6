// Safetensors, the weight file of Hugging Face models and PEFT adapters: an 8-byte
// little-endian header length, a JSON header (dtype, shape, data_offsets per tensor, plus an
// optional "__metadata__" string map), then the raw tensor bytes. Everything is decoded to
// float32 because both model implementations compute in float32. Multi-gigabyte files are
// read tensor by tensor through a file descriptor (Node cannot hold a >2 GiB file in one
// Buffer) and written tensor by tensor, so no whole-file copy is ever made.
import { closeSync, fstatSync, openSync, readSync, renameSync, rmSync, writeSync } from "node:fs";
import { ModelFormatError } from "#core/model/errors.ts";
import type { Float32Tensor } from "#core/model/weights.ts";
import { float16BitsToFloat32, float32ToBfloat16Bits, float32ToFloat16Bits } from "#core/math/float16.ts";

/** The dtypes this project decodes (and writes). */
export const SAFETENSORS_DTYPES = ["F32", "F16", "BF16"] as const;
export type SafetensorsDtype = (typeof SAFETENSORS_DTYPES)[number];

/** Element sizes of every dtype the format defines, so offsets can be checked even for tensors never decoded. */
const DTYPE_BYTES: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
  F8_E4M3: 1, F8_E5M2: 1,
};

/** The safetensors reference implementation refuses larger headers; so do we, before allocating. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** Largest single read/write handed to the OS (Linux transfers at most ~2 GiB per call). */
const IO_CHUNK = 1 << 30;

/** One tensor as the header describes it; offsets are relative to the start of the data section. */
export interface SafetensorsEntry {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  entries: SafetensorsEntry[];
  metadata: Record<string, string>;
  /** Byte offset of the data section in the file (8 + header length). */
  dataStart: number;
  /** The first `dataStart` bytes of the file, verbatim (used for fingerprints). */
  headerBytes: Uint8Array;
}

/** A decoded tensor; `dtype` says how it was stored. */
export interface SafetensorsTensor extends Float32Tensor {
  dtype: SafetensorsDtype;
}

export interface SafetensorsFile {
  tensors: Map<string, SafetensorsTensor>;
  metadata: Record<string, string>;
}

export interface ReadOptions {
  /** Decode only the tensors for which this returns true (the header is still fully validated). */
  select?: (name: string) => boolean;
}

export interface WriteOptions {
  /** Storage dtype for every tensor; default F32. */
  dtype?: SafetensorsDtype;
  /** Written as "__metadata__"; default {format: "pt"}, which transformers expects. */
  metadata?: Record<string, string>;
}

/** A tensor to be written whose data is produced only when its turn comes. */
export interface TensorSource {
  name: string;
  shape: number[];
  data: () => Float32Array;
}

export const elementCount = (shape: readonly number[]) => shape.reduce((n, d) => n * d, 1);

export function isSafetensorsDtype(dtype: string): dtype is SafetensorsDtype {
  return (SAFETENSORS_DTYPES as readonly string[]).includes(dtype);
}

// ---------------------------------------------------------------------------------------
// Header

/** Validates the 8-byte length prefix against the file size; returns the header length. */
function headerLength(prefix: Uint8Array, fileSize: number, source: string): number {
  if (fileSize < 8) throw new ModelFormatError(source, `truncated safetensors file: ${fileSize} bytes, the header length alone needs 8`);
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(fileSize - 8)) {
    throw new ModelFormatError(source, `truncated safetensors file: header length ${n} runs past the end of the file (${fileSize} bytes)`);
  }
  if (n > BigInt(MAX_HEADER_BYTES)) throw new ModelFormatError(source, `safetensors header of ${n} bytes exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (n < 2n) throw new ModelFormatError(source, `safetensors header length ${n} is too small to hold a JSON object`);
  return Number(n);
}

const isNonNegInt = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

function parseEntry(name: string, value: unknown, dataLength: number, source: string): SafetensorsEntry {
  const where = `tensor "${name}"`;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ModelFormatError(source, `${where}: header entry must be an object with dtype, shape and data_offsets`);
  }
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
  if (typeof dtype !== "string") throw new ModelFormatError(source, `${where}: "dtype" must be a string`);
  if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
    throw new ModelFormatError(source, `${where}: "shape" must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt) || offsets[0] > offsets[1]) {
    throw new ModelFormatError(source, `${where}: "data_offsets" must be [begin, end] with 0 <= begin <= end, got ${JSON.stringify(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  if (end > dataLength) {
    throw new ModelFormatError(source, `${where}: data_offsets [${begin}, ${end}] run past the end of the data section (${dataLength} bytes; file truncated?)`);
  }
  const size = DTYPE_BYTES[dtype];
  if (size !== undefined && end - begin !== elementCount(shape) * size) {
    throw new ModelFormatError(
      source,
      `${where}: data_offsets span ${end - begin} bytes but ${dtype} [${shape.join(", ")}] needs ${elementCount(shape) * size}`,
    );
  }
  return { name, dtype, shape: shape as number[], begin, end };
}

function parseMetadata(value: unknown, source: string): Record<string, string> {
  if (value === undefined || value === null) return {};
  if (typeof value !== "object" || Array.isArray(value)) throw new ModelFormatError(source, `"__metadata__" must be an object of strings`);
  for (const [key, v] of Object.entries(value)) {
    if (typeof v !== "string") throw new ModelFormatError(source, `"__metadata__"."${key}" must be a string, got ${JSON.stringify(v)}`);
  }
  return value as Record<string, string>;
}

function rejectOverlaps(entries: SafetensorsEntry[], source: string): void {
  const sorted = entries.filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1];
    const cur = sorted[i];
    if (cur.begin < prev.end) {
      throw new ModelFormatError(
        source,
        `tensors "${prev.name}" [${prev.begin}, ${prev.end}] and "${cur.name}" [${cur.begin}, ${cur.end}] have overlapping data_offsets`,
      );
    }
  }
}

/** Parses and validates a header given the file's first `8 + header length` bytes. */
function parseHeader(headerBytes: Uint8Array, fileSize: number, source: string): SafetensorsHeader {
  const dataStart = headerBytes.length;
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes.subarray(8)));
  } catch (err) {
    throw new ModelFormatError(source, `malformed safetensors header JSON: ${(err as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new ModelFormatError(source, "malformed safetensors header: expected a JSON object");
  }
  const entries: SafetensorsEntry[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(json)) {
    if (name === "__metadata__") metadata = parseMetadata(value, source);
    else entries.push(parseEntry(name, value, fileSize - dataStart, source));
  }
  rejectOverlaps(entries, source);
  return { entries, metadata, dataStart, headerBytes };
}

// ---------------------------------------------------------------------------------------
// Decoding

let f16Table: Float32Array | null = null;
/** All 65536 half values, so decoding is one lookup per element. */
function float16Table(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) f16Table[bits] = float16BitsToFloat32(bits);
  }
  return f16Table;
}

/** Decodes half-width elements from little-endian bytes into `out` (no alignment needed). */
function decodeHalves(bytes: Uint8Array, dtype: "F16" | "BF16", out: Float32Array): void {
  const n = out.length;
  if (dtype === "F16") {
    const table = float16Table();
    for (let i = 0; i < n; i++) out[i] = table[bytes[2 * i] | (bytes[2 * i + 1] << 8)];
  } else {
    // bfloat16 is the upper half of a float32, so the bits only move.
    const out32 = new Uint32Array(out.buffer, out.byteOffset, n);
    for (let i = 0; i < n; i++) out32[i] = ((bytes[2 * i] | (bytes[2 * i + 1] << 8)) << 16) >>> 0;
  }
}

function checkDecodable(entry: SafetensorsEntry, source: string): SafetensorsDtype {
  if (!isSafetensorsDtype(entry.dtype)) {
    throw new ModelFormatError(source, `tensor "${entry.name}" has unsupported dtype ${entry.dtype}; supported: ${SAFETENSORS_DTYPES.join(", ")}`);
  }
  return entry.dtype;
}

function decodeEntry(entry: SafetensorsEntry, bytes: Uint8Array, source: string): SafetensorsTensor {
  const dtype = checkDecodable(entry, source);
  const data = new Float32Array(elementCount(entry.shape));
  if (dtype === "F32") new Uint8Array(data.buffer).set(bytes);
  else decodeHalves(bytes, dtype, data);
  return { dtype, shape: entry.shape, data };
}

/** Parses a whole safetensors file held in memory (e.g. adapter bytes received over gRPC). */
export function parseSafetensors(bytes: Uint8Array, source: string, options: ReadOptions = {}): SafetensorsFile {
  const n = headerLength(bytes, bytes.length, source);
  const header = parseHeader(bytes.subarray(0, 8 + n), bytes.length, source);
  const tensors = new Map<string, SafetensorsTensor>();
  for (const entry of header.entries) {
    if (options.select && !options.select(entry.name)) continue;
    const start = header.dataStart + entry.begin;
    tensors.set(entry.name, decodeEntry(entry, bytes.subarray(start, header.dataStart + entry.end), source));
  }
  return { tensors, metadata: header.metadata };
}

// ---------------------------------------------------------------------------------------
// Files

function openForRead(path: string): number {
  try {
    return openSync(path, "r");
  } catch (err) {
    throw new ModelFormatError(path, `cannot open safetensors file: ${(err as Error).message}`);
  }
}

/** Fills `target` from `position`, looping because the OS may return fewer bytes than asked. */
function readFully(fd: number, target: Uint8Array, position: number, path: string): void {
  let done = 0;
  while (done < target.length) {
    const want = Math.min(IO_CHUNK, target.length - done);
    const got = readSync(fd, target, done, want, position + done);
    if (got === 0) throw new ModelFormatError(path, `unexpected end of file at byte ${position + done} (file truncated while reading?)`);
    done += got;
  }
}

function readHeaderFromFd(fd: number, path: string): { header: SafetensorsHeader; fileSize: number } {
  const fileSize = fstatSync(fd).size;
  const prefix = new Uint8Array(8);
  if (fileSize >= 8) readFully(fd, prefix, 0, path);
  const n = headerLength(prefix, fileSize, path);
  const headerBytes = new Uint8Array(8 + n);
  readFully(fd, headerBytes, 0, path);
  return { header: parseHeader(headerBytes, fileSize, path), fileSize };
}

/** Reads and validates only the header of a safetensors file. */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  const fd = openForRead(path);
  try {
    return readHeaderFromFd(fd, path).header;
  } finally {
    closeSync(fd);
  }
}

/** Reads a safetensors file tensor by tensor; F32 data lands directly in its Float32Array. */
export function readSafetensors(path: string, options: ReadOptions = {}): SafetensorsFile {
  const fd = openForRead(path);
  try {
    const { header } = readHeaderFromFd(fd, path);
    const tensors = new Map<string, SafetensorsTensor>();
    for (const entry of header.entries) {
      if (options.select && !options.select(entry.name)) continue;
      const dtype = checkDecodable(entry, path);
      const data = new Float32Array(elementCount(entry.shape));
      const position = header.dataStart + entry.begin;
      if (dtype === "F32") {
        readFully(fd, new Uint8Array(data.buffer), position, path);
      } else {
        const raw = new Uint8Array(entry.end - entry.begin);
        readFully(fd, raw, position, path);
        decodeHalves(raw, dtype, data);
      }
      tensors.set(entry.name, { dtype, shape: entry.shape, data });
    }
    return { tensors, metadata: header.metadata };
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------
// Encoding

/** The header for these tensors, padded with spaces so the data section starts 8-byte aligned. */
function buildHeader(sources: readonly { name: string; shape: number[] }[], dtype: SafetensorsDtype, metadata: Record<string, string>): Uint8Array {
  const json: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const { name, shape } of sources) {
    if (name === "__metadata__") throw new Error(`"__metadata__" cannot be a tensor name`);
    if (name in json) throw new Error(`duplicate tensor name "${name}"`);
    const size = elementCount(shape) * DTYPE_BYTES[dtype];
    json[name] = { dtype, shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  const text = new TextEncoder().encode(JSON.stringify(json));
  const padded = Math.ceil((8 + text.length) / 8) * 8;
  const out = new Uint8Array(padded).fill(0x20, 8 + text.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded - 8), true);
  out.set(text, 8);
  return out;
}

/** The stored bytes of one tensor in `dtype` (a view, not a copy, for F32). */
function encodeData(data: Float32Array, dtype: SafetensorsDtype): Uint8Array {
  if (dtype === "F32") return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const toBits = dtype === "F16" ? float32ToFloat16Bits : float32ToBfloat16Bits;
  const bits = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) bits[i] = toBits(data[i]);
  return new Uint8Array(bits.buffer);
}

function checkedData(source: TensorSource, where: string): Float32Array {
  const data = source.data();
  const want = elementCount(source.shape);
  if (data.length !== want) {
    throw new ModelFormatError(where, `tensor "${source.name}" has ${data.length} values but shape [${source.shape.join(", ")}] needs ${want}`);
  }
  return data;
}

const defaultMetadata = (options: WriteOptions) => options.metadata ?? { format: "pt" };

const fromMap = (tensors: ReadonlyMap<string, Float32Tensor>): TensorSource[] =>
  [...tensors].map(([name, t]) => ({ name, shape: t.shape, data: () => t.data }));

/** Encodes tensors into one in-memory safetensors file (meant for adapters, not whole models). */
export function encodeSafetensors(tensors: ReadonlyMap<string, Float32Tensor>, options: WriteOptions = {}): Uint8Array {
  const dtype = options.dtype ?? "F32";
  const sources = fromMap(tensors);
  const header = buildHeader(sources, dtype, defaultMetadata(options));
  const total = header.length + sources.reduce((n, s) => n + elementCount(s.shape) * DTYPE_BYTES[dtype], 0);
  const out = new Uint8Array(total);
  out.set(header);
  let offset = header.length;
  for (const source of sources) {
    const bytes = encodeData(checkedData(source, "safetensors"), dtype);
    out.set(bytes, offset);
    offset += bytes.length;
  }
  return out;
}

function writeFully(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, Math.min(IO_CHUNK, bytes.length - done));
}

/**
 * Streams tensors to `path`, asking each source for its data only when it is written, so a
 * caller generating or converting a large model holds one tensor at a time. The file is
 * written beside its final name and renamed, so readers never see half a file.
 */
export function writeSafetensorsFrom(path: string, sources: readonly TensorSource[], options: WriteOptions = {}): void {
  const dtype = options.dtype ?? "F32";
  const header = buildHeader(sources, dtype, defaultMetadata(options));
  const partial = `${path}.partial`;
  const fd = openSync(partial, "w");
  let complete = false;
  try {
    writeFully(fd, header);
    for (const source of sources) writeFully(fd, encodeData(checkedData(source, path), dtype));
    complete = true;
  } finally {
    closeSync(fd);
    if (!complete) rmSync(partial, { force: true });
  }
  renameSync(partial, path);
}

/** Writes a map of float32 tensors (in map order) to a safetensors file. */
export function writeSafetensors(path: string, tensors: ReadonlyMap<string, Float32Tensor>, options: WriteOptions = {}): void {
  writeSafetensorsFrom(path, fromMap(tensors), options);
}
