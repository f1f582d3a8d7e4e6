// Serializing a message whose large bytes fields sit inside nested messages (a FULL step's two
// 600 KB log-probability vectors, three messages deep). protobuf-es writes a message into one
// growing buffer and, closing each enclosing message, shifts the payload to widen that message's
// length prefix, so such a vector is moved about eight times (0.47-0.82 ms a FULL float32 step,
// most of what protobuf adds to the stream). Here those fields are left out of toBinary and
// written after its output, each wrapped in the tags and lengths of the messages on its path,
// computed from the sizes: the payload is copied once. The wire format makes the two parts one
// message: a parser merges a message field met twice and keeps the last value of a bytes field
// (the protobuf conformance tests hold runtimes to it; protobuf-es and Python's are tested here),
// so it reads the same message as toBinary's bytes. A runtime that replaced the message instead
// of merging it would lose fields; the README names that restriction. Bytes under a repeated or
// map field stay with toBinary: met twice, those add an element.
import type { DescField, DescMessage } from "@bufbuild/protobuf";
import { ScalarType, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";

/** Bytes fields of at least this many bytes are written after the rest; smaller ones gain nothing. */
export const LARGE_BYTES = 64 * 1024;

/** The singular message fields leading from a message type to one of its bytes fields, then that field. */
type BytesPath = readonly DescField[];

const pathsBySchema = new WeakMap<DescMessage, readonly BytesPath[]>();

/** Every path from `schema` to a bytes field through singular message fields; a type already on the path is not entered again. */
function bytesPaths(schema: DescMessage): readonly BytesPath[] {
  let paths = pathsBySchema.get(schema);
  if (paths) return paths;
  const found: BytesPath[] = [];
  const visit = (message: DescMessage, path: DescField[], onPath: Set<DescMessage>) => {
    for (const field of message.fields) {
      if (field.fieldKind === "scalar" && field.scalar === ScalarType.BYTES) found.push([...path, field]);
      else if (field.fieldKind === "message" && !field.delimitedEncoding && !onPath.has(field.message)) {
        visit(field.message, [...path, field], new Set(onPath).add(field.message));
      }
    }
  };
  visit(schema, [], new Set([schema]));
  paths = found;
  pathsBySchema.set(schema, paths);
  return paths;
}

type Fields = Record<string, unknown>;

/** A field's value in a protobuf-es message object (a oneof member only while its case is set). */
function valueOf(message: Fields, field: DescField): unknown {
  if (!field.oneof) return message[field.localName];
  const oneof = message[field.oneof.localName] as { case?: string; value?: unknown };
  return oneof.case === field.localName ? oneof.value : undefined;
}

/** Sets a field of a copy; a oneof gets a new case object, so the original's is not touched. */
function setValue(copy: Fields, field: DescField, value: unknown): void {
  if (field.oneof) copy[field.oneof.localName] = { case: field.localName, value };
  else copy[field.localName] = value;
}

interface LargeField {
  path: BytesPath;
  bytes: Uint8Array;
}

function largeFields(schema: DescMessage, message: Fields): LargeField[] {
  const large: LargeField[] = [];
  for (const path of bytesPaths(schema)) {
    let holder: unknown = message;
    for (let i = 0; i < path.length - 1 && holder !== undefined; i++) holder = valueOf(holder as Fields, path[i]);
    if (holder === undefined) continue;
    const bytes = valueOf(holder as Fields, path[path.length - 1]);
    if (bytes instanceof Uint8Array && bytes.byteLength >= LARGE_BYTES) large.push({ path, bytes });
  }
  return large;
}

/**
 * The message with every large field empty: shallow copies of the messages on the fields'
 * paths, the rest shared. The caller's message is never written to, so a sub-message it also
 * holds elsewhere (under a repeated field, say) is still serialized whole there.
 */
function withoutLargeFields(message: Fields, large: LargeField[]): Fields {
  const copies = new Map<Fields, Fields>();
  const copyOf = (original: Fields): Fields => {
    let copy = copies.get(original);
    if (!copy) {
      copy = Object.assign(Object.create(Object.getPrototypeOf(original)) as Fields, original);
      copies.set(original, copy);
    }
    return copy;
  };
  const root = copyOf(message);
  const empty = new Uint8Array(0);
  for (const { path } of large) {
    let original = message;
    let copy = root;
    for (const field of path.slice(0, -1)) {
      original = valueOf(original, field) as Fields;
      const child = copyOf(original);
      setValue(copy, field, child);
      copy = child;
    }
    setValue(copy, path[path.length - 1], empty);
  }
  return root;
}

/** The tags and length prefixes of `path`, outermost first, for a payload of `payloadBytes` in its last field. */
function pathHeader(path: BytesPath, payloadBytes: number): Uint8Array {
  // Each length counts everything after its own prefix, so they are found inside out.
  const prefixes: Uint8Array[] = [];
  let inner = payloadBytes;
  for (let i = path.length - 1; i >= 0; i--) {
    const prefix = new BinaryWriter().tag(path[i].number, WireType.LengthDelimited).uint32(inner).finish();
    prefixes.unshift(prefix);
    inner += prefix.byteLength;
  }
  const header = new Uint8Array(inner - payloadBytes);
  let at = 0;
  for (const prefix of prefixes) {
    header.set(prefix, at);
    at += prefix.byteLength;
  }
  return header;
}

/** The same message as toBinary(schema, message), with every large bytes field copied once. */
export function serializeMessage(schema: DescMessage, message: object): Uint8Array {
  const large = largeFields(schema, message as Fields);
  if (large.length === 0) return toBinary(schema, message as never);
  const rest = toBinary(schema, withoutLargeFields(message as Fields, large) as never);
  const headers = large.map((f) => pathHeader(f.path, f.bytes.byteLength));
  const out = new Uint8Array(rest.byteLength + large.reduce((n, f, i) => n + headers[i].byteLength + f.bytes.byteLength, 0));
  out.set(rest, 0);
  let at = rest.byteLength;
  large.forEach((f, i) => {
    out.set(headers[i], at);
    at += headers[i].byteLength;
    out.set(f.bytes, at);
    at += f.bytes.byteLength;
  });
  return out;
}
