// 95% intervals for evaluation reports: how sure an accuracy is, and how sure an
// improvement is when the same problems are scored before and after training.
//
// Choices. A single accuracy uses the Wilson score interval: unlike the plain normal
// interval it stays inside [0, 1] and does not collapse to zero width at 0% or 100%, which
// small smoke-test evaluations hit. The before/after difference is paired: per problem
// d_i = after_i - before_i in {-1, 0, 1}, interval mean(d) +- z * sd(d) / sqrt(n) with the
// sample (n - 1) standard deviation. Pairing removes the between-problem variance that two
// independent intervals would double count. It is a normal approximation, clamped to [-1, 1].
import { MethodInputError } from "./errors.ts";

/** Two-sided 95% normal quantile, as the method's reports round it. */
export const Z_95 = 1.96;

export interface Interval {
  estimate: number;
  lower: number;
  upper: number;
}

export function wilsonInterval(correct: number, total: number, z: number = Z_95): Interval {
  if (!Number.isInteger(total) || total < 1) throw new MethodInputError("total", `must be a positive integer, got ${total}`);
  if (!Number.isInteger(correct) || correct < 0 || correct > total) {
    throw new MethodInputError("correct", `must be an integer in [0, ${total}], got ${correct}`);
  }
  validateZ(z);
  const p = correct / total;
  const z2n = (z * z) / total;
  const centre = (p + z2n / 2) / (1 + z2n);
  const half = (z / (1 + z2n)) * Math.sqrt((p * (1 - p)) / total + z2n / (4 * total));
  return { estimate: p, lower: Math.max(0, centre - half), upper: Math.min(1, centre + half) };
}

export interface PairedDifference extends Interval {
  n: number;
  /** Problems wrong before and right after. */
  improved: number;
  /** Problems right before and wrong after. */
  worsened: number;
  /** Sample standard deviation of the per-problem differences. */
  sd: number;
}

/** after - before on the same problems, in the same order; `estimate` is the accuracy gain. */
export function pairedDifferenceInterval(
  before: ArrayLike<boolean>,
  after: ArrayLike<boolean>,
  z: number = Z_95,
): PairedDifference {
  if (after.length !== before.length) {
    throw new MethodInputError("after", `scores ${after.length} problems but before scores ${before.length}; they must be the same problems`);
  }
  const n = before.length;
  if (n < 2) throw new MethodInputError("before", `needs at least 2 problems for a standard deviation, got ${n}`);
  validateZ(z);
  let improved = 0;
  let worsened = 0;
  for (let i = 0; i < n; i++) {
    if (after[i] && !before[i]) improved++;
    else if (before[i] && !after[i]) worsened++;
  }
  const mean = (improved - worsened) / n;
  // sum d_i^2 = improved + worsened, since each d_i is -1, 0 or 1.
  const variance = Math.max(0, (improved + worsened - n * mean * mean) / (n - 1));
  const sd = Math.sqrt(variance);
  const half = (z * sd) / Math.sqrt(n);
  return { estimate: mean, lower: Math.max(-1, mean - half), upper: Math.min(1, mean + half), n, improved, worsened, sd };
}

function validateZ(z: number): void {
  if (!(z > 0 && Number.isFinite(z))) throw new MethodInputError("z", `must be a positive finite number, got ${z}`);
}
