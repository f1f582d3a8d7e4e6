// Small numeric helpers shared by the model tests.
import { logSoftmax } from "#core/math/distribution.ts";

/** Largest |a[i] - b[i]|; lengths must match (a mismatch is a test failure, not a 0). */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= max)) max = d; // NaN propagates as NaN, failing any toBeLessThan
  }
  return max;
}

/** Rows [from, to) of a row-major [rows, width] array, flattened. */
export const rows = (data: Float32Array, width: number, from: number, to: number) => data.subarray(from * width, to * width);

/** Every row of a row-major [rows, width] array of logits through logSoftmax: what the session gives for them. */
export function logSoftmaxRows(logits: ArrayLike<number>, width: number): Float32Array {
  if (logits.length % width !== 0) throw new Error(`${logits.length} values do not make rows of ${width}`);
  const out = new Float32Array(logits.length);
  for (let at = 0; at < logits.length; at += width) out.set(logSoftmax(logits, at, width), at);
  return out;
}

/** Concatenates float64 rows (the reference forward's output) into one array. */
export const flat = (rowsList: Float64Array[]) => Float64Array.from(rowsList.flatMap((r) => Array.from(r)));

export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}
