import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  encodeSafetensors,
  parseSafetensors,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
  type SafetensorsDtype,
} from "./safetensors.ts";
import type { Float32Tensor } from "#core/model/weights.ts";
import { ModelFormatError } from "#core/model/errors.ts";
import { bfloat16BitsToFloat32, float16BitsToFloat32, float32ToBfloat16Bits, float32ToFloat16Bits } from "#core/math/float16.ts";

const dir = mkdtempSync(join(tmpdir(), "lr-safetensors-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A safetensors file built by hand (not by the writer under test). */
function handBuilt(header: Record<string, unknown>, data: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function u16le(values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 2);
  values.forEach((v, i) => {
    out[2 * i] = v & 0xff;
    out[2 * i + 1] = v >> 8;
  });
  return out;
}

function sampleTensors(): Map<string, Float32Tensor> {
  const values = Float32Array.from({ length: 6 * 5 }, (_, i) => Math.sin(i * 1.7) * (i % 3 === 0 ? 300 : 0.01) + i * 0.125);
  return new Map<string, Float32Tensor>([
    ["model.embed_tokens.weight", { shape: [6, 5], data: values }],
    ["model.norm.weight", { shape: [3], data: Float32Array.of(1, -2.5, 0.333) }],
    ["scalar", { shape: [], data: Float32Array.of(7.25) }],
    ["empty", { shape: [0, 4], data: new Float32Array(0) }],
  ]);
}

const rounders: Record<SafetensorsDtype, (x: number) => number> = {
  F32: (x) => Math.fround(x),
  F16: (x) => float16BitsToFloat32(float32ToFloat16Bits(x)),
  BF16: (x) => bfloat16BitsToFloat32(float32ToBfloat16Bits(x)),
};

describe("safetensors round trip", () => {
  for (const dtype of ["F32", "F16", "BF16"] as const) {
    it(`writes and reads ${dtype} through a file and through bytes`, () => {
      const tensors = sampleTensors();
      const path = join(dir, `round-${dtype}.safetensors`);
      writeSafetensors(path, tensors, { dtype, metadata: { format: "pt", note: "round trip" } });
      const fromFile = readSafetensors(path);
      const fromBytes = parseSafetensors(encodeSafetensors(tensors, { dtype, metadata: { format: "pt", note: "round trip" } }), "bytes");
      expect(new Uint8Array(readFileSync(path))).toEqual(encodeSafetensors(tensors, { dtype, metadata: { format: "pt", note: "round trip" } }));
      for (const file of [fromFile, fromBytes]) {
        expect(file.metadata).toEqual({ format: "pt", note: "round trip" });
        expect([...file.tensors.keys()]).toEqual([...tensors.keys()]);
        for (const [name, t] of tensors) {
          const got = file.tensors.get(name)!;
          expect(got.dtype).toBe(dtype);
          expect(got.shape).toEqual(t.shape);
          expect(Array.from(got.data)).toEqual(Array.from(t.data, rounders[dtype]));
        }
      }
      // Half precision actually lost bits on these values, so the test can tell dtypes apart.
      if (dtype !== "F32") expect(fromFile.tensors.get("model.norm.weight")!.data[2]).not.toBe(Math.fround(0.333));
    });
  }

  it("aligns the data section to 8 bytes and records the stored dtype in the header", () => {
    const path = join(dir, "aligned.safetensors");
    writeSafetensors(path, sampleTensors(), { dtype: "BF16" });
    const header = readSafetensorsHeader(path);
    expect(header.dataStart % 8).toBe(0);
    expect(header.metadata).toEqual({ format: "pt" });
    expect(header.entries.map((e) => e.dtype)).toEqual(["BF16", "BF16", "BF16", "BF16"]);
  });

  it("reads only the selected tensors", () => {
    const bytes = encodeSafetensors(sampleTensors());
    const file = parseSafetensors(bytes, "bytes", { select: (name) => name === "scalar" });
    expect([...file.tensors.keys()]).toEqual(["scalar"]);
  });

  it("refuses data whose length does not match the shape", () => {
    const bad = new Map([["w", { shape: [2, 2], data: new Float32Array(3) }]]);
    expect(() => encodeSafetensors(bad)).toThrow(/"w" has 3 values but shape \[2, 2\] needs 4/);
  });
});

describe("half-precision decoding of hand-built tensors", () => {
  it("decodes F16: 1.0, -2.5, 65504, the smallest subnormal, -0 and infinity", () => {
    const bytes = handBuilt(
      { h: { dtype: "F16", shape: [2, 3], data_offsets: [0, 12] } },
      u16le([0x3c00, 0xc100, 0x7bff, 0x0001, 0x8000, 0x7c00]),
    );
    const { data, dtype } = parseSafetensors(bytes, "f16").tensors.get("h")!;
    expect(dtype).toBe("F16");
    expect(Array.from(data)).toEqual([1, -2.5, 65504, 2 ** -24, -0, Infinity]);
    expect(Object.is(data[4], -0)).toBe(true);
  });

  it("decodes BF16: 1.0, -2.5, the largest finite value, a subnormal and NaN", () => {
    const bytes = handBuilt(
      { b: { dtype: "BF16", shape: [5], data_offsets: [0, 10] } },
      u16le([0x3f80, 0xc020, 0x7f7f, 0x0001, 0x7fc0]),
    );
    const { data } = parseSafetensors(bytes, "bf16").tensors.get("b")!;
    expect(data[0]).toBe(1);
    expect(data[1]).toBe(-2.5);
    expect(data[2]).toBe(Math.fround(3.3895313892515355e38));
    expect(data[3]).toBe(Math.fround(2 ** -133));
    expect(data[3]).toBeGreaterThan(0);
    expect(Number.isNaN(data[4])).toBe(true);
  });

  it("decodes F16 from a file read through a descriptor, at an odd data offset", () => {
    const bytes = handBuilt(
      {
        pad: { dtype: "U8", shape: [1], data_offsets: [0, 1] },
        h: { dtype: "F16", shape: [2], data_offsets: [1, 5] },
      },
      new Uint8Array([9, ...u16le([0x3c00, 0xc100])]),
    );
    const path = join(dir, "odd.safetensors");
    writeFileSync(path, bytes);
    const file = readSafetensors(path, { select: (n) => n === "h" });
    expect(Array.from(file.tensors.get("h")!.data)).toEqual([1, -2.5]);
  });
});

describe("safetensors errors", () => {
  const f32 = (n: number) => new Uint8Array(n * 4);

  function fileError(bytes: Uint8Array, name: string): ModelFormatError {
    const path = join(dir, name);
    writeFileSync(path, bytes);
    try {
      readSafetensors(path);
    } catch (err) {
      expect(err).toBeInstanceOf(ModelFormatError);
      expect((err as ModelFormatError).file).toBe(path);
      return err as ModelFormatError;
    }
    throw new Error("expected an error");
  }

  it("reports a file too short for the header length", () => {
    expect(fileError(new Uint8Array(5), "short.safetensors").problem).toMatch(/truncated safetensors file: 5 bytes/);
  });

  it("reports a header length that runs past the end of the file", () => {
    const good = handBuilt({ w: { dtype: "F32", shape: [2], data_offsets: [0, 8] } }, f32(2));
    const cut = good.subarray(0, 20);
    expect(fileError(cut, "cut.safetensors").problem).toMatch(/header length \d+ runs past the end of the file \(20 bytes\)/);
  });

  it("reports tensor data that runs past the end of the file", () => {
    const good = handBuilt({ w: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, f32(4));
    const err = fileError(good.subarray(0, good.length - 4), "cut-data.safetensors");
    expect(err.problem).toMatch(/tensor "w": data_offsets \[0, 16\] run past the end of the data section \(12 bytes/);
  });

  it("reports malformed header JSON", () => {
    const text = new TextEncoder().encode('{"w": {"dtype": "F32",');
    const bytes = new Uint8Array(8 + text.length);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(text.length), true);
    bytes.set(text, 8);
    expect(() => parseSafetensors(bytes, "broken.safetensors")).toThrow(/broken\.safetensors: malformed safetensors header JSON/);
  });

  it("reports offsets that disagree with dtype and shape", () => {
    const bytes = handBuilt({ w: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, f32(3));
    expect(() => parseSafetensors(bytes, "x")).toThrow(/tensor "w": data_offsets span 8 bytes but F32 \[3\] needs 12/);
  });

  it("reports overlapping tensors by name", () => {
    const bytes = handBuilt(
      {
        a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
        b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
      },
      f32(3),
    );
    expect(() => parseSafetensors(bytes, "x")).toThrow(/"a" \[0, 8\] and "b" \[4, 12\] have overlapping data_offsets/);
  });

  it("names the tensor with an unsupported dtype, unless it is not selected", () => {
    const bytes = handBuilt(
      {
        w: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
        position_ids: { dtype: "I64", shape: [2], data_offsets: [4, 20] },
      },
      new Uint8Array(20),
    );
    expect(() => parseSafetensors(bytes, "x")).toThrow(/tensor "position_ids" has unsupported dtype I64/);
    expect(parseSafetensors(bytes, "x", { select: (n) => n === "w" }).tensors.size).toBe(1);
  });

  it("reports a missing file", () => {
    expect(() => readSafetensors(join(dir, "absent.safetensors"))).toThrow(/absent\.safetensors: cannot open safetensors file/);
  });
});
