// How the generator picks the next token: greedy or temperature/top-p sampling from the
// expert, and contrastive decoding (argmax over the expert's plausible set of
// log pE - log pA, or a tempered draw from it). Every random choice comes from the caller's
// SeededRandom, one draw per sampled token, so a seed replays a generation exactly.
import { MethodInputError } from "./errors.ts";
import type { SeededRandom, UniformSource } from "./random.ts";
import { type LogProbs, assertSameVocabulary, softmax } from "./distribution.ts";
import { contrastiveScores, gather, plausibleSet } from "./selection.ts";

export interface SamplingOptions {
  /** 0 means greedy; otherwise logits are divided by it before sampling. */
  temperature: number;
  /** Nucleus: keep the smallest most-probable prefix whose tempered mass reaches topP. Default 1 (off). */
  topP?: number;
}

/** The most probable token; ties go to the lowest id. */
export function argmaxToken(logp: LogProbs): number {
  if (logp.length === 0) throw new MethodInputError("logp", "is empty");
  let best = 0;
  for (let i = 1; i < logp.length; i++) if (logp[i] > logp[best]) best = i;
  return best;
}

/** Throws MethodInputError unless temperature is a finite number >= 0 and topP lies in (0, 1]. */
export function validateSampling({ temperature, topP = 1 }: SamplingOptions): void {
  if (typeof temperature !== "number" || !Number.isFinite(temperature) || temperature < 0) {
    throw new MethodInputError("temperature", `must be a finite number >= 0, got ${temperature}`);
  }
  if (typeof topP !== "number" || !(topP > 0 && topP <= 1)) {
    throw new MethodInputError("topP", `must be a number in (0, 1], got ${topP}`);
  }
}

/**
 * Draws the next token. Greedy (temperature 0) draws nothing from `rng`; any other
 * temperature draws exactly one float, so the rng's state after a step does not depend on
 * the distribution.
 */
export function sampleToken(logp: LogProbs, options: SamplingOptions, rng: UniformSource): number {
  validateSampling(options);
  const { temperature, topP = 1 } = options;
  if (temperature === 0) return argmaxToken(logp);
  const max = logp[argmaxToken(logp)];
  const weights = new Float64Array(logp.length);
  let total = 0;
  for (let i = 0; i < logp.length; i++) {
    weights[i] = Math.exp((logp[i] - max) / temperature);
    total += weights[i];
  }
  if (topP < 1) {
    const { threshold, lastTieId } = nucleusEdge(logp, weights, topP * total);
    for (let i = 0; i < logp.length; i++) {
      if (logp[i] < threshold || (logp[i] === threshold && i > lastTieId)) weights[i] = 0;
    }
  }
  return drawIndex(weights, rng.next());
}

/**
 * Where the top-p nucleus ends: the smallest prefix, in order of probability (ties: lower
 * id first), whose weight reaches `target` is every token above `threshold` plus the tokens
 * at it with id <= lastTieId. A weighted quickselect finds the edge in expected O(V), so a
 * flat distribution whose nucleus holds thousands of tokens costs no more than a peaked
 * one, and the vocabulary is never sorted.
 */
function nucleusEdge(logp: LogProbs, weights: Float64Array, target: number): { threshold: number; lastTieId: number } {
  const idx = new Int32Array(logp.length);
  for (let i = 0; i < idx.length; i++) idx[i] = i;
  // Invariant: idx[0, lo) holds tokens more probable than any in idx[lo, hi), with mass `above`.
  let lo = 0;
  let hi = idx.length;
  let above = 0;
  for (;;) {
    const pivot = logp[idx[(lo + hi) >>> 1]];
    let lt = lo;
    let gt = hi;
    for (let i = lo; i < gt; ) {
      const x = logp[idx[i]];
      if (x > pivot) swap(idx, lt++, i++);
      else if (x < pivot) swap(idx, i, --gt);
      else i++;
    }
    // Now idx[lo, lt) > pivot, idx[lt, gt) == pivot, idx[gt, hi) < pivot.
    let greater = 0;
    for (let i = lo; i < lt; i++) greater += weights[idx[i]];
    if (above + greater >= target) {
      hi = lt;
      continue;
    }
    let equal = 0;
    for (let i = lt; i < gt; i++) equal += weights[idx[i]];
    if (above + greater + equal >= target || gt === hi) {
      // The edge falls inside the tie group at the pivot: take its ids in ascending order.
      let cumulative = above + greater;
      let lastTieId = -1;
      for (let i = 0; i < logp.length && cumulative < target; i++) {
        if (logp[i] === pivot) {
          cumulative += weights[i];
          lastTieId = i;
        }
      }
      return { threshold: pivot, lastTieId };
    }
    above += greater + equal;
    lo = gt;
  }
}

function swap(a: Int32Array, i: number, j: number): void {
  const t = a[i];
  a[i] = a[j];
  a[j] = t;
}

/** Index j with probability weights[j] / sum(weights), for u uniform in [0, 1). */
function drawIndex(weights: ArrayLike<number>, u: number): number {
  let total = 0;
  for (let j = 0; j < weights.length; j++) total += weights[j];
  const target = u * total;
  let cumulative = 0;
  let last = 0;
  for (let j = 0; j < weights.length; j++) {
    if (weights[j] === 0) continue;
    cumulative += weights[j];
    last = j;
    if (cumulative > target) return j;
  }
  return last;
}

/** Contrastive decoding: argmax over the expert's alpha-plausible set of log pE - log pA (ties: the expert's favourite). */
export function contrastiveChoice(logpExpert: LogProbs, logpAmateur: LogProbs, alpha: number): number {
  const { ids, scores } = plausibleScores(logpExpert, logpAmateur, alpha);
  let best = 0;
  for (let j = 1; j < scores.length; j++) if (scores[j] > scores[best]) best = j;
  return ids[best];
}

export interface ContrastiveSamplingOptions {
  alpha: number;
  /** 0 means contrastiveChoice; 1 samples from exactly the method's soft label v_C. */
  temperature: number;
}

/** A draw from softmax(score / temperature) over the plausible set; one rng draw unless greedy. */
export function sampleContrastiveToken(
  logpExpert: LogProbs,
  logpAmateur: LogProbs,
  { alpha, temperature }: ContrastiveSamplingOptions,
  rng: SeededRandom,
): number {
  validateSampling({ temperature });
  if (temperature === 0) return contrastiveChoice(logpExpert, logpAmateur, alpha);
  const { ids, scores } = plausibleScores(logpExpert, logpAmateur, alpha);
  return ids[drawIndex(softmax(scores.map((s) => s / temperature)), rng.next())];
}

function plausibleScores(logpExpert: LogProbs, logpAmateur: LogProbs, alpha: number): { ids: Int32Array; scores: Float64Array } {
  assertSameVocabulary(logpExpert, logpAmateur);
  const ids = plausibleSet(logpExpert, alpha);
  return { ids, scores: contrastiveScores(gather(logpExpert, ids), gather(logpAmateur, ids)) };
}
