// The unit the trainers consume: a whole trajectory (prompt + completion tokens, exactly as
// the expert produced them) with its training targets attached, instead of one sequence per
// selected step as the reference feeds its fine-tuning. A target at position p is a
// distribution over the token at index p, i.e. what the logits at index p - 1 (after reading
// tokens[0..p-1]) should predict. With causal attention one forward over the trajectory
// gives the logits at every selected position at once (METHOD.md, "quadratic training cost").
import { TrajectoryError } from "./errors.ts";

/** A soft label over a few token ids (LightReasoner's v_C over V_t, or a one-hot label). */
export interface SoftLabel {
  ids: readonly number[];
  /** Probabilities, one per id, summing to 1. */
  weights: readonly number[];
}

export interface TrajectoryTarget extends SoftLabel {
  /** Index in tokenIds of the token this label is for; the logits at position - 1 predict it. */
  position: number;
}

export interface Trajectory {
  /** Prompt followed by the completion, token-exact. */
  tokenIds: readonly number[];
  /** Tokens of tokenIds that are the prompt (the chat-rendered question). */
  promptLength: number;
  /** Soft labels at selected steps (LightReasoner); empty for SFT and pretraining, which label every token. */
  targets: readonly TrajectoryTarget[];
}

/** How far a label's weights may sum away from 1 (float32 softmax, JSON round trips). */
export const WEIGHT_SUM_TOLERANCE = 1e-3;

/**
 * Throws a TrajectoryError naming the first malformed field. `where` prefixes field names
 * (e.g. `trajectories[3]`); `vocabSize` bounds every token id.
 */
export function checkTrajectory(t: Trajectory, vocabSize: number, where = "trajectory"): void {
  const fail = (field: string, problem: string): never => {
    throw new TrajectoryError(`${where}.${field}`, problem);
  };
  if (typeof t !== "object" || t === null) throw new TrajectoryError(where, "must be an object");
  if (!Array.isArray(t.tokenIds) || t.tokenIds.length === 0) fail("tokenIds", "must be a non-empty array of token ids");
  const validId = (id: unknown) => Number.isInteger(id) && (id as number) >= 0 && (id as number) < vocabSize;
  t.tokenIds.forEach((id, i) => {
    if (!validId(id)) fail(`tokenIds[${i}]`, `is ${JSON.stringify(id)}; expected a token id in [0, ${vocabSize})`);
  });
  if (!Number.isInteger(t.promptLength) || t.promptLength < 0 || t.promptLength > t.tokenIds.length) {
    fail("promptLength", `is ${JSON.stringify(t.promptLength)}; expected an integer in [0, ${t.tokenIds.length}] (the trajectory's length)`);
  }
  if (!Array.isArray(t.targets)) fail("targets", "must be an array (empty when every token is labelled)");
  const seen = new Set<number>();
  t.targets.forEach((target, k) => checkTarget(target, t.tokenIds.length, validId, seen, (field, problem) => fail(`targets[${k}]${field}`, problem)));
}

function checkTarget(
  target: TrajectoryTarget,
  length: number,
  validId: (id: unknown) => boolean,
  seen: Set<number>,
  fail: (field: string, problem: string) => never,
): void {
  const { position, ids, weights } = target;
  // Position `length` is allowed: the logits after the last token predict a token not (yet) in the trajectory.
  if (!Number.isInteger(position) || position < 1 || position > length) {
    fail(".position", `is ${JSON.stringify(position)}; expected an integer in [1, ${length}] (logits at position - 1 are read)`);
  }
  if (seen.has(position)) fail(".position", `${position} is labelled twice in one trajectory`);
  seen.add(position);
  if (!Array.isArray(ids) || ids.length === 0) fail(".ids", "must list at least one token id");
  if (!Array.isArray(weights) || weights.length !== ids.length) {
    fail(".weights", `must have one weight per id (${ids.length}), got ${Array.isArray(weights) ? weights.length : typeof weights}`);
  }
  const unique = new Set<number>();
  ids.forEach((id, j) => {
    if (!validId(id)) fail(`.ids[${j}]`, `is ${JSON.stringify(id)}; not a token id of this model`);
    if (unique.has(id)) fail(`.ids[${j}]`, `token ${id} appears twice in one label`);
    unique.add(id);
  });
  let sum = 0;
  weights.forEach((w, j) => {
    if (typeof w !== "number" || !Number.isFinite(w) || w < 0) fail(`.weights[${j}]`, `is ${JSON.stringify(w)}; expected a finite probability >= 0`);
    sum += w;
  });
  if (Math.abs(sum - 1) > WEIGHT_SUM_TOLERANCE) fail(".weights", `sum to ${sum}; a soft label must sum to 1`);
}

/** The labels SFT and pretraining train on: one-hot on every token from `from` on. */
export function everyTokenTargets(tokenIds: readonly number[], from: number): TrajectoryTarget[] {
  const targets: TrajectoryTarget[] = [];
  for (let p = Math.max(1, from); p < tokenIds.length; p++) targets.push({ position: p, ids: [tokenIds[p]], weights: [1] });
  return targets;
}
