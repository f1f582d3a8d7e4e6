// Stage 1, steps 3-5 of the method for one generation step: the beta filter on the
// full-vocabulary KL, the expert's alpha-plausible set, and the contrastive soft label
// softmax over that set of (log pE - log pA). Pure functions of two log-prob vectors.
import { MethodInputError } from "./errors.ts";
import {
  type LogProbs,
  PROBABILITY_SMOOTHING,
  assertSameVocabulary,
  entropy,
  klDivergence,
  softmax,
} from "./distribution.ts";

/**
 * The smoothing used inside the contrast log pE - log pA. The reference computes the
 * contrast from log(p + 1e-12), as it does for KL, and so do we: it keeps every score
 * finite when the amateur gives a plausible token zero probability (the raw contrast would
 * be +Infinity). Set it to 0 to use the raw log-ratio; softmax then takes the +Infinity
 * limit (all weight split over the tokens the amateur rules out).
 */
export const CONTRASTIVE_SMOOTHING: number = PROBABILITY_SMOOTHING;

export function validateAlpha(alpha: number): void {
  if (typeof alpha !== "number" || !(alpha > 0 && alpha <= 1)) {
    throw new MethodInputError("alpha", `must be a number in (0, 1], got ${alpha}`);
  }
}

export function validateBeta(beta: number): void {
  if (typeof beta !== "number" || !Number.isFinite(beta) || beta < 0) {
    throw new MethodInputError("beta", `must be a finite number >= 0, got ${beta}`);
  }
}

/**
 * V = { a : pE(a) >= alpha * max_b pE(b) }, tested in the log domain as
 * logpE(a) - max logpE >= ln(alpha) in float64 (a token exactly at the boundary is in).
 * Ids come back most probable first, ties by lower id. |V| <= 1 / (alpha * max pE): small
 * for a peaked expert, but a flat expert can make it as large as the vocabulary.
 */
export function plausibleSet(logpExpert: LogProbs, alpha: number): Int32Array {
  validateAlpha(alpha);
  let max = -Infinity;
  for (let i = 0; i < logpExpert.length; i++) if (logpExpert[i] > max) max = logpExpert[i];
  if (!Number.isFinite(max)) throw new MethodInputError("logpExpert", "has no token with finite log-probability");
  const logAlpha = Math.log(alpha);
  const ids: number[] = [];
  for (let i = 0; i < logpExpert.length; i++) if (logpExpert[i] - max >= logAlpha) ids.push(i);
  ids.sort((a, b) => logpExpert[b] - logpExpert[a] || a - b);
  return Int32Array.from(ids);
}

/** The values of `logp` at `ids`, exactly (no rounding), in the order of `ids`. */
export function gather(logp: LogProbs, ids: Int32Array): Float32Array {
  const out = new Float32Array(ids.length);
  for (let j = 0; j < ids.length; j++) out[j] = logp[ids[j]];
  return out;
}

/** log pE(a) - log pA(a) on the plausible set, with `smoothing` added to both probabilities. */
export function contrastiveScores(
  logpExpertOnSet: Float32Array,
  logpAmateurOnSet: Float32Array,
  smoothing: number = CONTRASTIVE_SMOOTHING,
): Float64Array {
  if (logpAmateurOnSet.length !== logpExpertOnSet.length) {
    throw new MethodInputError(
      "logpAmateurOnSet",
      `has ${logpAmateurOnSet.length} entries but logpExpertOnSet has ${logpExpertOnSet.length}`,
    );
  }
  if (!(smoothing >= 0)) throw new MethodInputError("smoothing", `must be >= 0, got ${smoothing}`);
  const scores = new Float64Array(logpExpertOnSet.length);
  for (let j = 0; j < scores.length; j++) {
    const lE = logpExpertOnSet[j];
    const lA = logpAmateurOnSet[j];
    if (!Number.isFinite(lE)) throw new MethodInputError("logpExpertOnSet", `entry ${j} is ${lE}; a plausible token has pE > 0`);
    if (lA !== lA) throw new MethodInputError("logpAmateurOnSet", `entry ${j} is NaN`);
    scores[j] = smoothing === 0 ? lE - lA : Math.log(Math.exp(lE) + smoothing) - Math.log(Math.exp(lA) + smoothing);
  }
  return scores;
}

/** v_C: softmax over the plausible set of the contrastive scores; sums to 1. */
export function contrastiveTarget(
  logpExpertOnSet: Float32Array,
  logpAmateurOnSet: Float32Array,
  smoothing: number = CONTRASTIVE_SMOOTHING,
): Float64Array {
  if (logpExpertOnSet.length === 0) throw new MethodInputError("logpExpertOnSet", "the plausible set is empty");
  return softmax(contrastiveScores(logpExpertOnSet, logpAmateurOnSet, smoothing), "contrastiveScores");
}

/** The beta filter: a step is kept only when its KL is strictly above beta. */
export function isSelected(kl: number, beta: number): boolean {
  validateBeta(beta);
  if (typeof kl !== "number" || Number.isNaN(kl)) throw new MethodInputError("kl", `must be a number, got ${kl}`);
  return kl > beta;
}

/** Everything stage 1 decides about one step. */
export interface StepSelection {
  /** Full-vocabulary KL(pE || pA) with the 1e-12 smoothing. */
  kl: number;
  /** Entropy of the expert's distribution, in nats. */
  entropy: number;
  selected: boolean;
  plausibleIds: Int32Array;
  plausibleLogpExpert: Float32Array;
  plausibleLogpAmateur: Float32Array;
  /** v_C on plausibleIds, in the same order; zero elsewhere by definition. */
  targetWeights: Float64Array;
}

export interface SelectStepInput {
  logpExpert: LogProbs;
  logpAmateur: LogProbs;
  alpha: number;
  beta: number;
}

/** Steps 2-5 from the two full distributions. Targets are computed even for rejected steps. */
export function selectStep({ logpExpert, logpAmateur, alpha, beta }: SelectStepInput): StepSelection {
  validateAlpha(alpha);
  validateBeta(beta);
  assertSameVocabulary(logpExpert, logpAmateur);
  const kl = klDivergence(logpExpert, logpAmateur);
  const plausibleIds = plausibleSet(logpExpert, alpha);
  const plausibleLogpExpert = gather(logpExpert, plausibleIds);
  const plausibleLogpAmateur = gather(logpAmateur, plausibleIds);
  return {
    kl,
    entropy: entropy(logpExpert),
    selected: isSelected(kl, beta),
    plausibleIds,
    plausibleLogpExpert,
    plausibleLogpAmateur,
    targetWeights: contrastiveTarget(plausibleLogpExpert, plausibleLogpAmateur),
  };
}

/** What a kept step is trained toward: the method's contrastive soft label, or (an ablation) the expert's own choice. */
export type StepLabelKind = "contrastive" | "expert_argmax";

/**
 * A kept step's training target as token ids and weights: v_C over the plausible set, or all
 * weight on the expert's most probable token (ties: the lower id), which is always in the
 * set. The second is what training on the expert's own greedy tokens at the selected steps
 * would be, so the two differ only by what the contrast with the amateur adds.
 */
export function stepLabel(selection: StepSelection, kind: StepLabelKind): { ids: Int32Array; weights: Float64Array } {
  if (kind === "contrastive") return { ids: selection.plausibleIds, weights: selection.targetWeights };
  const { plausibleIds: ids, plausibleLogpExpert: logp } = selection;
  if (ids.length === 0) throw new MethodInputError("plausibleIds", "the plausible set is empty");
  let best = 0;
  for (let j = 1; j < ids.length; j++) if (logp[j] > logp[best] || (logp[j] === logp[best] && ids[j] < ids[best])) best = j;
  return { ids: Int32Array.of(ids[best]), weights: Float64Array.of(1) };
}
