// Next-token distributions as the method sees them: log-probabilities over the full
// vocabulary, one float32 per token id, and the full-vocabulary quantities stage 1 needs
// from a pair of them (the expert-amateur KL, the expert's entropy, a top-k view).
// Every sum accumulates in float64: a 151,936-entry float32 sum would drift visibly.
import { MethodInputError } from "./errors.ts";

/** Log-probabilities indexed by token id, as logSoftmax writes them. */
export type LogProbs = Float32Array;

/**
 * The reference adds this to both probabilities before the log, so KL stays finite where
 * the amateur gives a token exactly zero probability (a -Infinity log-probability).
 */
export const PROBABILITY_SMOOTHING = 1e-12;

/**
 * log softmax of `logits[offset .. offset+length)` (one row of a [batch, vocab] tensor).
 * Three passes: the max, the sum of exp(x - max), the write; -Infinity logits (masked
 * tokens) are allowed and give -Infinity, NaN or +Infinity anywhere is an error.
 */
export function logSoftmax(logits: ArrayLike<number>, offset = 0, length = logits.length - offset): Float32Array {
  if (!Number.isInteger(offset) || offset < 0) {
    throw new MethodInputError("offset", `must be a non-negative integer, got ${offset}`);
  }
  if (!Number.isInteger(length) || length < 1 || offset + length > logits.length) {
    throw new MethodInputError("length", `must be >= 1 with offset + length <= ${logits.length}, got offset ${offset}, length ${length}`);
  }
  const end = offset + length;
  let max = -Infinity;
  for (let i = offset; i < end; i++) {
    const x = logits[i];
    if (x > max) max = x;
    else if (x !== x) throw new MethodInputError("logits", `NaN at index ${i - offset}`);
  }
  if (max === Infinity) throw new MethodInputError("logits", "contains +Infinity");
  if (max === -Infinity) throw new MethodInputError("logits", "every logit is -Infinity");
  let sum = 0;
  for (let i = offset; i < end; i++) sum += Math.exp(logits[i] - max);
  const logZ = max + Math.log(sum);
  const out = new Float32Array(length);
  for (let i = offset; i < end; i++) out[i - offset] = logits[i] - logZ;
  return out;
}

/** Shannon entropy in nats, -sum p log p; tokens with p = 0 contribute nothing. */
export function entropy(logp: LogProbs): number {
  let h = 0;
  for (let i = 0; i < logp.length; i++) {
    const p = Math.exp(logp[i]);
    if (p > 0) h -= p * logp[i];
  }
  return h;
}

/**
 * KL(p_E || p_A) over the full vocabulary, exactly as the method's step 2 states it:
 * sum_a pE(a) * (log(pE(a) + 1e-12) - log(pA(a) + 1e-12)).
 * (The reference's torch kl_div weights by pE + 1e-12 instead of pE; over 151,936 tokens
 * that changes the value by at most about 1e-12 * V * 28 < 5e-6.)
 */
export function klDivergence(logpExpert: LogProbs, logpAmateur: LogProbs): number {
  assertSameVocabulary(logpExpert, logpAmateur);
  const eps = PROBABILITY_SMOOTHING;
  let kl = 0;
  for (let i = 0; i < logpExpert.length; i++) {
    const pE = Math.exp(logpExpert[i]);
    if (pE === 0) continue; // its term is 0 * (a finite number)
    kl += pE * (Math.log(pE + eps) - Math.log(Math.exp(logpAmateur[i]) + eps));
  }
  return kl;
}

export function assertSameVocabulary(logpExpert: LogProbs, logpAmateur: LogProbs): void {
  if (logpExpert.length !== logpAmateur.length) {
    throw new MethodInputError(
      "logpAmateur",
      `covers ${logpAmateur.length} tokens but logpExpert covers ${logpExpert.length}; the models must share one vocabulary`,
    );
  }
}

/** The k most probable tokens and the probability mass of all the others. */
export interface TopK {
  /** Token ids, most probable first; equal log-probabilities keep the lower id first. */
  ids: Int32Array;
  logp: Float32Array;
  /**
   * Sum of the probabilities of every token not listed, added up directly rather than as
   * 1 - (top-k mass), so it is never negative when logp is normalised only to float32.
   */
  restMass: number;
}

/**
 * Top-k in one pass with a size-k min-heap (O(V log k)), so a 151,936-token vocabulary is
 * never sorted. k larger than the vocabulary returns every token; k = 0 returns none.
 */
export function topK(logp: LogProbs, k: number): TopK {
  const top = new TopKAccumulator(k, logp.length);
  for (let i = 0; i < logp.length; i++) top.add(i, logp[i], Math.exp(logp[i]));
  return top.result();
}

/**
 * The heap behind topK, fed one token at a time with its log-probability and probability,
 * so a caller that already computed exp(logp) for another sum (scanPair) does not pay for
 * it twice. The mass left out is summed in token order exactly as topK always did.
 */
export class TopKAccumulator {
  private readonly size: number;
  private readonly heapIds: Int32Array;
  private readonly heapLogp: Float32Array;
  private filled = 0;
  private restMass = 0;

  constructor(k: number, vocabSize: number) {
    if (!Number.isInteger(k) || k < 0) throw new MethodInputError("k", `must be a non-negative integer, got ${k}`);
    this.size = Math.min(k, vocabSize);
    this.heapIds = new Int32Array(this.size);
    this.heapLogp = new Float32Array(this.size);
  }

  /** Token `id` (ids must come in increasing order) with log-probability `x` and p = exp(x). */
  add(id: number, x: number, p: number): void {
    const { size, heapIds, heapLogp } = this;
    if (this.filled < size) {
      heapIds[this.filled] = id;
      heapLogp[this.filled] = x;
      siftUp(heapIds, heapLogp, this.filled++);
    } else if (size > 0 && x > heapLogp[0]) {
      // Later ids lose ties, so only a strictly larger value displaces the heap's worst.
      this.restMass += Math.exp(heapLogp[0]);
      heapIds[0] = id;
      heapLogp[0] = x;
      siftDown(heapIds, heapLogp, size);
    } else {
      this.restMass += p;
    }
  }

  result(): TopK {
    const { heapIds, heapLogp } = this;
    const order = Array.from({ length: this.filled }, (_, j) => j).sort((a, b) => before(heapIds, heapLogp, a, b));
    return {
      ids: Int32Array.from(order, (j) => heapIds[j]),
      logp: Float32Array.from(order, (j) => heapLogp[j]),
      restMass: this.restMass,
    };
  }
}

/** The full-vocabulary quantities of one step, as scanPair gathers them. */
export interface PairScan {
  kl: number;
  expertEntropy: number;
  expertTop: TopK;
  amateurTop: TopK;
}

/**
 * klDivergence, entropy of the expert and topK of both models in ONE pass over the
 * vocabulary, sharing each exp(): four transcendental calls per token instead of seven
 * over four passes (measured by `lightreasoner bench`, section step). Every sum adds the
 * same terms in the same order as the separate functions, so the results are bit for bit
 * theirs.
 */
export function scanPair(logpExpert: LogProbs, logpAmateur: LogProbs, k: number): PairScan {
  assertSameVocabulary(logpExpert, logpAmateur);
  const vocab = logpExpert.length;
  const expertTop = new TopKAccumulator(k, vocab);
  const amateurTop = new TopKAccumulator(k, vocab);
  const eps = PROBABILITY_SMOOTHING;
  let kl = 0;
  let h = 0;
  for (let i = 0; i < vocab; i++) {
    const lE = logpExpert[i];
    const lA = logpAmateur[i];
    const pE = Math.exp(lE);
    const pA = Math.exp(lA);
    if (pE > 0) h -= pE * lE;
    if (pE !== 0) kl += pE * (Math.log(pE + eps) - Math.log(pA + eps));
    expertTop.add(i, lE, pE);
    amateurTop.add(i, lA, pA);
  }
  return { kl, expertEntropy: h, expertTop: expertTop.result(), amateurTop: amateurTop.result() };
}

/** Sort comparator: higher log-probability first, then lower id. */
function before(ids: Int32Array, logp: Float32Array, a: number, b: number): number {
  return logp[b] - logp[a] || ids[a] - ids[b];
}

/** The heap keeps its worst entry (lowest logp; on a tie, the highest id) at the root. */
function worse(ids: Int32Array, logp: Float32Array, a: number, b: number): boolean {
  return logp[a] < logp[b] || (logp[a] === logp[b] && ids[a] > ids[b]);
}

function swap(ids: Int32Array, logp: Float32Array, a: number, b: number): void {
  const id = ids[a];
  ids[a] = ids[b];
  ids[b] = id;
  const x = logp[a];
  logp[a] = logp[b];
  logp[b] = x;
}

function siftUp(ids: Int32Array, logp: Float32Array, j: number): void {
  while (j > 0) {
    const parent = (j - 1) >> 1;
    if (!worse(ids, logp, j, parent)) return;
    swap(ids, logp, j, parent);
    j = parent;
  }
}

function siftDown(ids: Int32Array, logp: Float32Array, size: number): void {
  let j = 0;
  for (;;) {
    const left = 2 * j + 1;
    if (left >= size) return;
    const right = left + 1;
    const child = right < size && worse(ids, logp, right, left) ? right : left;
    if (!worse(ids, logp, child, j)) return;
    swap(ids, logp, child, j);
    j = child;
  }
}

/**
 * softmax of a short score vector (a plausible set) in float64. Scores of +Infinity take
 * the limit: the mass is shared equally among them. NaN is an error.
 */
export function softmax(scores: ArrayLike<number>, parameter = "scores"): Float64Array {
  if (scores.length === 0) throw new MethodInputError(parameter, "is empty");
  let max = -Infinity;
  for (let i = 0; i < scores.length; i++) {
    const s = scores[i];
    if (s !== s) throw new MethodInputError(parameter, `NaN at index ${i}`);
    if (s > max) max = s;
  }
  if (max === -Infinity) throw new MethodInputError(parameter, "every score is -Infinity");
  const out = new Float64Array(scores.length);
  let sum = 0;
  for (let i = 0; i < scores.length; i++) {
    out[i] = max === Infinity ? (scores[i] === Infinity ? 1 : 0) : Math.exp(scores[i] - max);
    sum += out[i];
  }
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}
