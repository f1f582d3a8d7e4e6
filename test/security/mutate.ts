// Seeded mutations of request bytes for the fuzz test: random bytes, bit flips, truncation, and
// field-level edits made on the protobuf wire format (so they reach every field of every
// message without knowing its schema): a field's value replaced by an edge case of its wire
// type (0, -1, 2^32-1, NaN, +-Infinity, empty, invalid UTF-8, a long run...), a field dropped,
// repeated, or added with an unknown number, or a nested message mutated in turn.
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import type { SeededRandom } from "#core/math/random.ts";

type FieldValue =
  | { wire: WireType.Varint; value: bigint | string }
  | { wire: WireType.Bit64; value: bigint | string }
  | { wire: WireType.Bit32; value: number }
  | { wire: WireType.LengthDelimited; value: Uint8Array };
type Field = FieldValue & { no: number };

const pick = <T>(rng: SeededRandom, items: readonly T[]): T => items[Math.floor(rng.next() * items.length)];
const int = (rng: SeededRandom, below: number) => Math.floor(rng.next() * below);

export function randomBytes(rng: SeededRandom, maxLength: number): Uint8Array {
  return Uint8Array.from({ length: int(rng, maxLength + 1) }, () => int(rng, 256));
}

export function flipBits(bytes: Uint8Array, rng: SeededRandom): Uint8Array {
  const out = Uint8Array.from(bytes);
  if (out.length === 0) return Uint8Array.of(int(rng, 256));
  for (let n = 1 + int(rng, 4); n > 0; n--) out[int(rng, out.length)] ^= 1 << int(rng, 8);
  return out;
}

export function truncate(bytes: Uint8Array, rng: SeededRandom): Uint8Array {
  return bytes.slice(0, int(rng, Math.max(bytes.length, 1)));
}

/** Top-level fields of `bytes` in order, or null when they do not parse (or use groups). */
function parseFields(bytes: Uint8Array): Field[] | null {
  const reader = new BinaryReader(bytes);
  const fields: Field[] = [];
  try {
    while (reader.pos < reader.len) {
      const [no, wire] = reader.tag();
      if (wire === WireType.Varint) fields.push({ no, wire, value: reader.uint64() });
      else if (wire === WireType.Bit64) fields.push({ no, wire, value: reader.fixed64() });
      else if (wire === WireType.Bit32) fields.push({ no, wire, value: reader.fixed32() });
      else if (wire === WireType.LengthDelimited) fields.push({ no, wire, value: reader.bytes() });
      else return null;
    }
  } catch {
    return null;
  }
  return fields;
}

function encodeFields(fields: Field[]): Uint8Array {
  const writer = new BinaryWriter();
  for (const field of fields) {
    writer.tag(field.no, field.wire);
    switch (field.wire) {
      case WireType.Varint:
        writer.uint64(field.value);
        break;
      case WireType.Bit64:
        writer.fixed64(field.value);
        break;
      case WireType.Bit32:
        writer.fixed32(field.value);
        break;
      case WireType.LengthDelimited:
        writer.bytes(field.value);
        break;
    }
  }
  return writer.finish();
}

const float32Bits = (x: number) => new Uint32Array(Float32Array.of(x).buffer)[0];
const float64Bits = (x: number) => new BigUint64Array(Float64Array.of(x).buffer)[0];

// Varints read as uint64: -1 as an int32/int64 is 2^64-1 on the wire.
const VARINTS = [0n, 1n, 2n, 127n, 128n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n + 1n, 2n ** 63n - 1n, 2n ** 64n - 1n];
const FLOATS = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -0, 0, -1, 1e-45, 3.4e38, 0.5, 1.5, 1e9];
const DOUBLES = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -0, -1, 5e-324, 1.7e308, 0.5, 1.5];

/** An edge-case value of the same wire type (for a length-delimited field, possibly a mutated nested message). */
function edgeValue(field: Field, rng: SeededRandom, depth: number): FieldValue {
  switch (field.wire) {
    case WireType.Varint:
      return { wire: field.wire, value: rng.next() < 0.8 ? pick(rng, VARINTS) : BigInt(int(rng, 2 ** 31)) };
    case WireType.Bit32:
      return { wire: field.wire, value: rng.next() < 0.8 ? float32Bits(pick(rng, FLOATS)) : int(rng, 2 ** 32) };
    case WireType.Bit64:
      return { wire: field.wire, value: rng.next() < 0.8 ? float64Bits(pick(rng, DOUBLES)) : BigInt(int(rng, 2 ** 31)) };
    case WireType.LengthDelimited: {
      const choices: (() => Uint8Array)[] = [
        () => new Uint8Array(0),
        () => randomBytes(rng, 48),
        () => Uint8Array.of(0xff, 0xfe, 0xc0), // not UTF-8
        () => new TextEncoder().encode("../".repeat(8) + "etc/passwd"),
        () => new TextEncoder().encode("x".repeat(1 + int(rng, 5000))),
        () => {
          const value = field.value as Uint8Array;
          return Uint8Array.from([...value, ...value, ...value]);
        },
        () => fieldMutation(field.value as Uint8Array, rng, depth + 1),
      ];
      return { wire: field.wire, value: (depth < 3 && rng.next() < 0.4 ? choices[choices.length - 1] : pick(rng, choices.slice(0, -1)))() };
    }
  }
}

/** One field-level edit of an encoded message; falls back to a bit flip when the bytes do not parse as fields. */
export function fieldMutation(bytes: Uint8Array, rng: SeededRandom, depth = 0): Uint8Array {
  const fields = parseFields(bytes);
  if (!fields) return flipBits(bytes, rng);
  const kind = fields.length === 0 ? "add" : pick(rng, ["replace", "replace", "replace", "drop", "repeat", "add"] as const);
  const at = int(rng, fields.length);
  switch (kind) {
    case "replace":
      fields[at] = { no: fields[at].no, ...edgeValue(fields[at], rng, depth) } as Field;
      break;
    case "drop":
      fields.splice(at, 1);
      break;
    case "repeat":
      fields.splice(at, 0, fields[at]);
      break;
    case "add": {
      const wire = pick(rng, [WireType.Varint, WireType.Bit32, WireType.Bit64, WireType.LengthDelimited] as const);
      const no = rng.next() < 0.5 ? 1 + int(rng, 12) : 1 + int(rng, 2 ** 29 - 1);
      const blank: Field = wire === WireType.LengthDelimited ? { no, wire, value: new Uint8Array(0) } : wire === WireType.Bit32 ? { no, wire, value: 0 } : { no, wire, value: 0n };
      fields.splice(at, 0, { no, ...edgeValue(blank, rng, 3) } as Field);
      break;
    }
  }
  return encodeFields(fields);
}

export type Mutation = "random bytes" | "bit flips" | "truncation" | "field edit";

export function mutate(kind: Mutation, valid: Uint8Array, rng: SeededRandom): Uint8Array {
  switch (kind) {
    case "random bytes":
      return randomBytes(rng, 64);
    case "bit flips":
      return flipBits(valid, rng);
    case "truncation":
      return truncate(valid, rng);
    case "field edit":
      return fieldMutation(valid, rng);
  }
}
