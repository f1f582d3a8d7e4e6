// IEEE half precision and bfloat16 <-> float32, for safetensors F16/BF16 and the FULL
// distribution encoding. Node 20 has no Float16Array, so the bit manipulation lives here.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Rounds a float32 to the nearest half (ties to even); overflow becomes infinity. */
export function float32ToFloat16Bits(value: number): number {
  f32[0] = value;
  return float32BitsToFloat16Bits(u32[0]);
}

// The bits of 0.5: adding a float below the smallest normal half to it leaves the rounded
// half subnormal in the low mantissa bits, rounded by the float unit itself.
const SUBNORMAL_MAGIC = 126 << 23;
const SUBNORMAL_MAGIC_FLOAT = 0.5;

/**
 * The same rounding on the float32's bit pattern, with one branch for normal halves: the
 * FULL float16 encoding runs it over every vocabulary entry of every step.
 */
export function float32BitsToFloat16Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const x = bits & 0x7fffffff;
  if (x >= 0x47800000) return sign | (x > 0x7f800000 ? 0x7e00 : 0x7c00); // |v| >= 65536, infinity, NaN
  if (x < 0x38800000) {
    // below the smallest normal half (2^-14): subnormal or zero
    u32[0] = x;
    f32[0] += SUBNORMAL_MAGIC_FLOAT;
    return sign | (u32[0] - SUBNORMAL_MAGIC);
  }
  // rebias the exponent (127 -> 15) and round the 13 dropped mantissa bits to nearest even;
  // a carry into the exponent is correct, up to infinity for 65520 <= |v| < 65536
  return sign | ((x - 0x38000000 + 0xfff + ((x >>> 13) & 1)) >>> 13);
}

export function float16BitsToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Rounds to bfloat16 (ties to even): the upper 16 bits of the float32. */
export function float32ToBfloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0];
  if ((x & 0x7fffffff) > 0x7f800000) return (x >>> 16) | 0x40; // keep NaN a NaN
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bfloat16BitsToFloat32(bits: number): number {
  u32[0] = (bits & 0xffff) << 16;
  return f32[0];
}

export function float32ArrayToFloat16(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < bits.length; i++) out[i] = float32BitsToFloat16Bits(bits[i]);
  return out;
}

export function float16ArrayToFloat32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = float16BitsToFloat32(bits[i]);
  return out;
}
