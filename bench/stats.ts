// How the benchmark turns repeated timings into figures: every figure is the median of its
// repeats (robust to a noisy neighbour on a shared 2-core machine, unlike the mean), kept
// with its spread and raw values so a reader can judge it; comparisons are ratios of medians.

/** One measured quantity: the median over repeats, the extremes, and every repeat. */
export interface Measured {
  median: number;
  min: number;
  max: number;
  /** Each repeat's value, in the order measured. */
  repeats: number[];
  unit: string;
}

export class BenchInputError extends Error {
  constructor(
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${field}: ${problem}`);
    this.name = "BenchInputError";
  }
}

/** The median of a non-empty list of finite numbers (the mean of the middle two for even counts). */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new BenchInputError("values", "is empty; a median needs at least one repeat");
  values.forEach((v, i) => {
    if (!Number.isFinite(v)) throw new BenchInputError(`values[${i}]`, `is ${v}; every repeat must be a finite number`);
  });
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export function measured(repeats: readonly number[], unit: string): Measured {
  return { median: median(repeats), min: Math.min(...repeats), max: Math.max(...repeats), repeats: [...repeats], unit };
}

/** `a / b` of two medians; null when `b` is zero (nothing to compare against). */
export function ratio(a: Measured | number, b: Measured | number): number | null {
  const x = typeof a === "number" ? a : a.median;
  const y = typeof b === "number" ? b : b.median;
  return y === 0 ? null : x / y;
}

/** Runs `once` `repeats` times after `warmup` unrecorded runs; each run returns its own figure. */
export async function repeat(options: { repeats: number; warmup?: number; unit: string }, once: (index: number) => Promise<number> | number): Promise<Measured> {
  const { repeats, warmup = 0, unit } = options;
  if (!Number.isInteger(repeats) || repeats < 1) throw new BenchInputError("repeats", `must be a positive integer, got ${repeats}`);
  for (let i = 0; i < warmup; i++) await once(-1 - i);
  const values: number[] = [];
  for (let i = 0; i < repeats; i++) values.push(await once(i));
  return measured(values, unit);
}

/** Seconds since `start` (a performance.now() reading). */
export const secondsSince = (start: number) => (performance.now() - start) / 1000;

/**
 * A number with about three significant digits and thousands separators ("151,936",
 * "87.3", "0.0412"), so table columns stay short whatever the magnitude.
 */
export function formatNumber(value: number | null | undefined): string {
  if (value === null || value === undefined || Number.isNaN(value)) return "-";
  if (!Number.isFinite(value)) return value > 0 ? "inf" : "-inf";
  const abs = Math.abs(value);
  if (abs === 0) return "0";
  if (abs >= 1000) return Math.round(value).toLocaleString("en-US");
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : abs >= 1 ? 2 : Math.min(6, 2 - Math.floor(Math.log10(abs)));
  return value.toFixed(digits);
}

/** A ratio as "12.3x"; "-" when there is nothing to compare. */
export function formatRatio(value: number | null | undefined): string {
  return value === null || value === undefined || !Number.isFinite(value) ? "-" : `${formatNumber(value)}x`;
}

/** A fraction as a percentage with two significant digits at least ("41%", "3.2%", "0.41%"). */
export function formatPercent(fraction: number | null | undefined): string {
  if (fraction === null || fraction === undefined || !Number.isFinite(fraction)) return "-";
  return `${formatNumber(fraction * 100)}%`;
}

/** A median with its spread across repeats, e.g. "87.3 (85.1-90.2)". */
export function formatMeasured(m: Measured | null | undefined): string {
  if (!m) return "-";
  if (m.repeats.length === 1 || m.min === m.max) return formatNumber(m.median);
  return `${formatNumber(m.median)} (${formatNumber(m.min)}-${formatNumber(m.max)})`;
}

/** Bytes as B, KiB or MiB with the number formatting above. */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return "-";
  if (bytes < 1024) return `${formatNumber(bytes)} B`;
  if (bytes < 1024 ** 2) return `${formatNumber(bytes / 1024)} KiB`;
  if (bytes < 1024 ** 3) return `${formatNumber(bytes / 1024 ** 2)} MiB`;
  return `${formatNumber(bytes / 1024 ** 3)} GiB`;
}
