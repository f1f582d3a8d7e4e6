import { describe, expect, it } from "vitest";
import {
  bfloat16BitsToFloat32,
  float16ArrayToFloat32,
  float16BitsToFloat32,
  float32ArrayToFloat16,
  float32ToBfloat16Bits,
  float32ToFloat16Bits,
} from "./float16.ts";

/** A float32 from its bit pattern, so tie cases are exact. */
function f32(bits: number): number {
  return new Float32Array(new Uint32Array([bits]).buffer)[0];
}

describe("float16", () => {
  it("maps the landmarks to their bit patterns", () => {
    expect(float32ToFloat16Bits(1)).toBe(0x3c00);
    expect(float32ToFloat16Bits(-2)).toBe(0xc000);
    expect(float32ToFloat16Bits(65504)).toBe(0x7bff); // largest finite half
    expect(float32ToFloat16Bits(2 ** -14)).toBe(0x0400); // smallest normal
    expect(float32ToFloat16Bits(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(float32ToFloat16Bits(1023 * 2 ** -24)).toBe(0x03ff); // largest subnormal
    expect(float32ToFloat16Bits(0)).toBe(0x0000);
    expect(float32ToFloat16Bits(-0)).toBe(0x8000);
  });

  it("rounds to nearest, ties to even", () => {
    // 1 + 2^-11 lies halfway between 1 (0x3c00, even) and 1 + 2^-10 (0x3c01): goes to 0x3c00.
    expect(float32ToFloat16Bits(1 + 2 ** -11)).toBe(0x3c00);
    // 1 + 3 * 2^-11 lies halfway between 0x3c01 (odd) and 0x3c02 (even): goes up.
    expect(float32ToFloat16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    // Just above a tie rounds up.
    expect(float32ToFloat16Bits(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01);
    // Subnormal ties: 2^-25 is halfway between 0 and 2^-24 -> 0; 3 * 2^-25 between 1 and 2 units -> 2.
    expect(float32ToFloat16Bits(2 ** -25)).toBe(0x0000);
    expect(float32ToFloat16Bits(3 * 2 ** -25)).toBe(0x0002);
    expect(float32ToFloat16Bits(1.5 * 2 ** -25)).toBe(0x0001);
    // 1023.5 units rounds (tie, 1023 odd) up to 1024 units = 2^-14, carrying into the smallest normal.
    expect(float32ToFloat16Bits(1023.5 * 2 ** -24)).toBe(0x0400);
    // Below half the smallest subnormal underflows to a signed zero.
    expect(float32ToFloat16Bits(-(2 ** -26))).toBe(0x8000);
  });

  it("overflows to infinity past 65504 + half an ulp", () => {
    expect(float32ToFloat16Bits(65519)).toBe(0x7bff);
    // 65520 is halfway between 65504 (0x7bff, odd) and 65536 (not representable): ties to even -> inf.
    expect(float32ToFloat16Bits(65520)).toBe(0x7c00);
    expect(float32ToFloat16Bits(1e6)).toBe(0x7c00);
    expect(float32ToFloat16Bits(-1e6)).toBe(0xfc00);
  });

  it("keeps infinities and NaN", () => {
    expect(float32ToFloat16Bits(Infinity)).toBe(0x7c00);
    expect(float32ToFloat16Bits(-Infinity)).toBe(0xfc00);
    const nan = float32ToFloat16Bits(NaN);
    expect((nan & 0x7c00) === 0x7c00 && (nan & 0x3ff) !== 0).toBe(true);
    expect(float16BitsToFloat32(nan)).toBeNaN();
    expect(float16BitsToFloat32(0x7c00)).toBe(Infinity);
    expect(float16BitsToFloat32(0xfc00)).toBe(-Infinity);
    expect(Object.is(float16BitsToFloat32(0x8000), -0)).toBe(true);
  });

  it("round-trips every one of the 65,536 half bit patterns", () => {
    for (let bits = 0; bits < 0x10000; bits++) {
      const value = float16BitsToFloat32(bits);
      if (Number.isNaN(value)) continue;
      expect(Math.fround(value)).toBe(value); // every half is exactly a float32
      if (float32ToFloat16Bits(value) !== bits) expect.fail(`0x${bits.toString(16)} -> ${value} -> 0x${float32ToFloat16Bits(value).toString(16)}`);
    }
    expect(float16BitsToFloat32(0x7bff)).toBe(65504);
    expect(float16BitsToFloat32(0x0001)).toBe(2 ** -24);
  });

  it("rounds float32s across the whole bit range as rounding in double arithmetic does", () => {
    // The reference: the nearest multiple of the half grid's spacing at |v|, ties to even,
    // computed in doubles (exact here), then looked up among the 65,536 decoded halves.
    const bitsOfHalf = new Map<number, number>();
    for (let bits = 0; bits < 0x10000; bits++) {
      const v = float16BitsToFloat32(bits);
      if (!Number.isNaN(v) && !bitsOfHalf.has(v)) bitsOfHalf.set(v, bits);
    }
    const reference = (v: number): number => {
      const a = Math.abs(v);
      if (Number.isNaN(v)) return 0x7e00;
      if (a >= 65520) return v < 0 ? 0xfc00 : 0x7c00;
      const exponent = a < 2 ** -14 ? -14 : Math.floor(Math.log2(a));
      const step = 2 ** (exponent - 10);
      const q = a / step;
      let r = Math.floor(q);
      if (q - r > 0.5 || (q - r === 0.5 && r % 2 === 1)) r++;
      const bits = bitsOfHalf.get(r * step)!;
      return v < 0 || Object.is(v, -0) ? bits | 0x8000 : bits;
    };
    const values = new Float32Array(4096);
    // A stride through all 2^32 patterns (both signs, subnormals, NaNs), in arrays and one by one.
    for (let start = 0; start < 2 ** 32; start += 4096 * 1031) {
      for (let i = 0; i < values.length; i++) values[i] = f32((start + i * 1031) >>> 0);
      const halves = float32ArrayToFloat16(values);
      for (let i = 0; i < values.length; i++) {
        const want = Number.isNaN(values[i]) ? (halves[i] & 0x8000) | 0x7e00 : reference(values[i]);
        if (halves[i] !== want) expect.fail(`${values[i]} -> 0x${halves[i].toString(16)}, want 0x${want.toString(16)}`);
        if (float32ToFloat16Bits(values[i]) !== halves[i]) expect.fail(`${values[i]}: element and array conversions differ`);
      }
    }
  });

  it("converts whole arrays", () => {
    const back = float16ArrayToFloat32(float32ArrayToFloat16(Float32Array.from([0.5, -1.25, 65504, 1e-8])));
    expect(Array.from(back)).toEqual([0.5, -1.25, 65504, 0]);
  });
});

describe("bfloat16", () => {
  it("keeps the upper half of the float32, rounding ties to even", () => {
    expect(float32ToBfloat16Bits(1)).toBe(0x3f80);
    expect(float32ToBfloat16Bits(-2)).toBe(0xc000);
    // 0x3f808000 is halfway between 0x3f80 (even) and 0x3f81: stays 0x3f80.
    expect(float32ToBfloat16Bits(f32(0x3f808000))).toBe(0x3f80);
    // 0x3f818000 is halfway between 0x3f81 (odd) and 0x3f82: goes up.
    expect(float32ToBfloat16Bits(f32(0x3f818000))).toBe(0x3f82);
    expect(float32ToBfloat16Bits(f32(0x3f808001))).toBe(0x3f81);
    // The largest float32 rounds up into infinity, as round-to-nearest requires.
    expect(float32ToBfloat16Bits(f32(0x7f7fffff))).toBe(0x7f80);
    // Subnormals round like everything else.
    expect(float32ToBfloat16Bits(f32(0x00018000))).toBe(0x0002);
  });

  it("keeps infinities, and NaN stays NaN even with only low payload bits", () => {
    expect(float32ToBfloat16Bits(Infinity)).toBe(0x7f80);
    expect(float32ToBfloat16Bits(-Infinity)).toBe(0xff80);
    expect(bfloat16BitsToFloat32(float32ToBfloat16Bits(NaN))).toBeNaN();
    // 0x7f800001 would truncate to 0x7f80 (infinity); the quiet bit keeps it a NaN.
    expect(bfloat16BitsToFloat32(float32ToBfloat16Bits(f32(0x7f800001)))).toBeNaN();
  });

  it("round-trips every non-NaN bfloat16 bit pattern", () => {
    for (let bits = 0; bits < 0x10000; bits++) {
      const value = bfloat16BitsToFloat32(bits);
      if (Number.isNaN(value)) continue;
      if (float32ToBfloat16Bits(value) !== bits) expect.fail(`0x${bits.toString(16)} did not round-trip`);
    }
  });
});
