// The compact per-step summary the inference server sends in SPARSE mode instead of two
// full distributions: the exact full-vocabulary KL and expert entropy, the expert's
// alpha-plausible set with both models' log-probabilities on it, and a top-k view of each
// model. selectFromSummary rebuilds the method's decisions from it with the very same
// arithmetic as selectStep, so SPARSE and FULL agree bit for bit.
import { MethodInputError } from "./errors.ts";
import { type LogProbs, type TopK, assertSameVocabulary, entropy, klDivergence, scanPair, topK } from "./distribution.ts";
import {
  type StepSelection,
  contrastiveTarget,
  gather,
  isSelected,
  plausibleSet,
  validateAlpha,
  validateBeta,
} from "./selection.ts";

export interface SparseStep {
  vocabSize: number;
  /** The alpha the plausible set was cut at; a client may narrow it (larger alpha) but never widen it. */
  alpha: number;
  kl: number;
  expertEntropy: number;
  /** Most probable first (ties: lower id), as plausibleSet returns them. */
  plausibleIds: Int32Array;
  plausibleLogpExpert: Float32Array;
  plausibleLogpAmateur: Float32Array;
  expertTop: TopK;
  amateurTop: TopK;
}

export interface SummarizeOptions {
  /** The alpha the client asked for. */
  alpha: number;
  /** How many top tokens of each model to include (0 for none). */
  topK: number;
}

export function summarizeStep(logpExpert: LogProbs, logpAmateur: LogProbs, { alpha, topK: k }: SummarizeOptions): SparseStep {
  validateAlpha(alpha);
  assertSameVocabulary(logpExpert, logpAmateur);
  const plausibleIds = plausibleSet(logpExpert, alpha);
  const { kl, expertEntropy, expertTop, amateurTop } = scanPair(logpExpert, logpAmateur, k);
  return {
    vocabSize: logpExpert.length,
    alpha,
    kl,
    expertEntropy,
    plausibleIds,
    plausibleLogpExpert: gather(logpExpert, plausibleIds),
    plausibleLogpAmateur: gather(logpAmateur, plausibleIds),
    expertTop,
    amateurTop,
  };
}

/**
 * The same summary with one pass per quantity (klDivergence, entropy, topK twice), as it was
 * first written: the oracle summarizeStep is tested against bit for bit, and the "before" of
 * the benchmark's step section (`lightreasoner bench --only step`), where it is about 1.5x slower.
 */
export function summarizeStepInPasses(logpExpert: LogProbs, logpAmateur: LogProbs, { alpha, topK: k }: SummarizeOptions): SparseStep {
  validateAlpha(alpha);
  assertSameVocabulary(logpExpert, logpAmateur);
  const plausibleIds = plausibleSet(logpExpert, alpha);
  return {
    vocabSize: logpExpert.length,
    alpha,
    kl: klDivergence(logpExpert, logpAmateur),
    expertEntropy: entropy(logpExpert),
    plausibleIds,
    plausibleLogpExpert: gather(logpExpert, plausibleIds),
    plausibleLogpAmateur: gather(logpAmateur, plausibleIds),
    expertTop: topK(logpExpert, k),
    amateurTop: topK(logpAmateur, k),
  };
}

export interface RebuildOptions {
  beta: number;
  /** Defaults to the summary's alpha; a larger alpha narrows the set exactly as FULL would. */
  alpha?: number;
}

/**
 * The method's decisions from a summary. Narrowing reuses plausibleSet on the set's own
 * log-probabilities: the expert's most probable token is always in the set, so the max and
 * every comparison are the ones the full vocabulary gives, and the set's order (logp
 * descending, then id ascending) makes position ties the same as id ties.
 */
export function selectFromSummary(summary: SparseStep, { beta, alpha = summary.alpha }: RebuildOptions): StepSelection {
  validateBeta(beta);
  validateAlpha(alpha);
  if (alpha < summary.alpha) {
    throw new MethodInputError("alpha", `the summary was cut at alpha ${summary.alpha}; it cannot answer for the wider set at alpha ${alpha}`);
  }
  const positions = plausibleSet(summary.plausibleLogpExpert, alpha);
  const plausibleIds = Int32Array.from(positions, (j) => summary.plausibleIds[j]);
  const plausibleLogpExpert = gather(summary.plausibleLogpExpert, positions);
  const plausibleLogpAmateur = gather(summary.plausibleLogpAmateur, positions);
  return {
    kl: summary.kl,
    entropy: summary.expertEntropy,
    selected: isSelected(summary.kl, beta),
    plausibleIds,
    plausibleLogpExpert,
    plausibleLogpAmateur,
    targetWeights: contrastiveTarget(plausibleLogpExpert, plausibleLogpAmateur),
  };
}

/**
 * Checks a summary that arrived over the wire before anything trusts it; `field` prefixes
 * the parameter named in the error (e.g. "step.sparse").
 */
export function validateSparseStep(summary: SparseStep, field = "sparseStep"): void {
  const fail = (name: string, problem: string): never => {
    throw new MethodInputError(`${field}.${name}`, problem);
  };
  const { vocabSize, plausibleIds: ids, plausibleLogpExpert: lE, plausibleLogpAmateur: lA } = summary;
  if (!Number.isInteger(vocabSize) || vocabSize < 1) fail("vocabSize", `must be a positive integer, got ${vocabSize}`);
  if (!(summary.alpha > 0 && summary.alpha <= 1)) fail("alpha", `must be in (0, 1], got ${summary.alpha}`);
  if (!Number.isFinite(summary.kl)) fail("kl", `must be finite, got ${summary.kl}`);
  if (!Number.isFinite(summary.expertEntropy) || summary.expertEntropy < 0) {
    fail("expertEntropy", `must be finite and >= 0, got ${summary.expertEntropy}`);
  }
  if (ids.length === 0) fail("plausibleIds", "is empty; the expert's most probable token is always plausible");
  if (lE.length !== ids.length) fail("plausibleLogpExpert", `has ${lE.length} entries for ${ids.length} plausible ids`);
  if (lA.length !== ids.length) fail("plausibleLogpAmateur", `has ${lA.length} entries for ${ids.length} plausible ids`);
  for (let j = 0; j < ids.length; j++) {
    if (!(ids[j] >= 0 && ids[j] < vocabSize)) fail("plausibleIds", `entry ${j} = ${ids[j]} is outside the vocabulary [0, ${vocabSize})`);
    if (!Number.isFinite(lE[j]) || lE[j] > 0) fail("plausibleLogpExpert", `entry ${j} = ${lE[j]} is not a finite log-probability`);
    if (!(lA[j] <= 0)) fail("plausibleLogpAmateur", `entry ${j} = ${lA[j]} is not a log-probability`);
    if (j > 0 && !(lE[j] < lE[j - 1] || (lE[j] === lE[j - 1] && ids[j] > ids[j - 1]))) {
      fail("plausibleIds", `entry ${j} breaks the order (expert log-probability descending, then id ascending)`);
    }
  }
  validateTopK(summary.expertTop, `${field}.expertTop`, vocabSize);
  validateTopK(summary.amateurTop, `${field}.amateurTop`, vocabSize);
}

function validateTopK(top: TopK, field: string, vocabSize: number): void {
  if (top.logp.length !== top.ids.length) {
    throw new MethodInputError(`${field}.logp`, `has ${top.logp.length} entries for ${top.ids.length} ids`);
  }
  for (let j = 0; j < top.ids.length; j++) {
    if (!(top.ids[j] >= 0 && top.ids[j] < vocabSize)) {
      throw new MethodInputError(`${field}.ids`, `entry ${j} = ${top.ids[j]} is outside the vocabulary [0, ${vocabSize})`);
    }
    if (!(top.logp[j] <= 0)) throw new MethodInputError(`${field}.logp`, `entry ${j} = ${top.logp[j]} is not a log-probability`);
  }
  if (!(top.restMass >= 0 && top.restMass <= 1 + 1e-6)) {
    throw new MethodInputError(`${field}.restMass`, `must be in [0, 1], got ${top.restMass}`);
  }
}
