// The per-step work on an expert/amateur pair of log-probability rows, computed by ONNX
// Runtime instead of JavaScript. The SPARSE step summary (core/math summarizeStep): the
// full-vocabulary sums (KL, expert entropy, both probability masses) and both models' top-k
// come out of vectorized kernels, and only k-sized results reach JavaScript. The plausible
// set is cut from the expert's top candidates with plausibleSet's own float64 test on their
// exact float32 values, so ids, order and log-probabilities are bit for bit today's; the
// sums are float32 and agree with core/math within SUMMARY_TOLERANCE. And FULL float16: both
// rows rounded to half precision by a Cast, bit for bit core/math's float32ArrayToFloat16.
// One run per pair, reading the caller's arrays in place: a run's intermediates then fit in
// a core's L2 cache, which measured cheaper per pair than batching rows (1.1 ms of CPU per
// pair one at a time against 1.7 ms in runs of 16 copied into one batch, while this was
// written), and no copy is made.
import * as ort from "onnxruntime-node";
import type { TopK } from "#core/math/distribution.ts";
import { PROBABILITY_SMOOTHING, assertSameVocabulary } from "#core/math/distribution.ts";
import { MethodInputError } from "#core/math/errors.ts";
import { plausibleSet, validateAlpha } from "#core/math/selection.ts";
import type { SparseStep, SummarizeOptions } from "#core/math/sparse-step.ts";
import { summarizeStep } from "#core/math/sparse-step.ts";
import type { ExecutionProvider, OrtSessionOptions } from "./execution-provider.ts";
import { openGraphSet } from "./execution-provider.ts";
import { GraphBuilder, ONNX_DATA_TYPE, int } from "#core/formats/onnx-builder.ts";
import { encodeInline } from "#core/formats/onnx-file.ts";
import { RowChunks } from "./row-chunks.ts";

/**
 * How far the native sums may stray from core/math's float64 ones, |native - js| <=
 * absolute + relative * |js|, for kl, expertEntropy and each top-k restMass:
 * - the expert side of KL uses log pE where core/math uses log(pE + 1e-12): each token's
 *   term pE * log(1 + 1e-12 / pE) is below 1e-12, so the sum moves by less than vocab * 1e-12
 *   (1.5e-7 at 151,936 tokens); the amateur side keeps the 1e-12 exactly as core/math does;
 * - float32 exp, log and products round each term to about 1e-7 relative, and the sums run
 *   in float32 in two levels (see row-chunks.ts): measured at vocabulary 151,936, about 1e-6
 *   absolute on KLs of 1-7 nats (pair-summary-graph.test.ts holds every field to this bound).
 * The trainer's beta test on a KL closer than this to beta may go the other way than on FULL.
 */
export const SUMMARY_TOLERANCE = Object.freeze({ absolute: 2e-6, relative: 2e-6 });

/** Whether a native sum is within SUMMARY_TOLERANCE of core/math's value. */
export function withinSummaryTolerance(native: number, exact: number): boolean {
  return Math.abs(native - exact) <= SUMMARY_TOLERANCE.absolute + SUMMARY_TOLERANCE.relative * Math.abs(exact);
}

/**
 * ONNX Runtime threads for the summary on CPU: one, the calling thread. Its kernels take 5 to
 * 350 us each, too short for a thread pool to pay: with the default pool of two on a shared
 * 2-core machine the process spent 2-2.3x the CPU time and 2-3x the wall time per pair
 * (`npx tsx bench/distributions.ts --threads 2` against the default).
 */
export const SUMMARY_THREADS = 1;

/**
 * Expert candidates fetched for the plausible set beyond top_k: |V| <= 1 / (alpha * max pE),
 * so a peaked expert needs a handful. A row whose every candidate is plausible may have more
 * members than were fetched and gets its set from core/math's plausibleSet instead.
 */
export const PLAUSIBLE_CANDIDATES = 64;

/**
 * The graph over one pair of [vocab] log-probability rows; k_expert and k_amateur are
 * inputs, so one session serves every top_k a client may ask for.
 *   pE = exp(expert), pA = exp(amateur)
 *   kl          = sum pE * (expert - log(pA + 1e-12))
 *   neg_entropy = sum pE * expert
 *   expert_mass = sum pE, amateur_mass = sum pA
 *   the top k of each model, larger first, equal values by lower id (as core/math orders them).
 * Both the sums and the top-k work on the row cut into chunks (row-chunks.ts).
 */
export function buildPairSummaryGraph(vocabSize: number): GraphBuilder {
  if (!Number.isInteger(vocabSize) || vocabSize < 1) throw new MethodInputError("vocabSize", `must be a positive integer, got ${vocabSize}`);
  const g = new GraphBuilder();
  const expert = g.input("expert", "float32", [vocabSize]);
  const amateur = g.input("amateur", "float32", [vocabSize]);
  const kExpert = g.input("k_expert", "int64", [1]);
  const kAmateur = g.input("k_amateur", "int64", [1]);
  const chunks = new RowChunks(g, vocabSize);

  const pExpert = g.op("Exp", [expert]);
  const pAmateur = g.op("Exp", [amateur]);
  const logAmateurSmoothed = g.op("Log", [g.op("Add", [pAmateur, g.float32([PROBABILITY_SMOOTHING], [])])]);
  const kl = chunks.sum(g.op("Mul", [pExpert, g.op("Sub", [expert, logAmateurSmoothed])]));
  const negEntropy = chunks.sum(g.op("Mul", [pExpert, expert]));
  const expertTop = chunks.topK(expert, kExpert);
  const amateurTop = chunks.topK(amateur, kAmateur);

  g.output(kl, "kl", "float32", []);
  g.output(negEntropy, "neg_entropy", "float32", []);
  g.output(chunks.sum(pExpert), "expert_mass", "float32", []);
  g.output(chunks.sum(pAmateur), "amateur_mass", "float32", []);
  g.output(expertTop.logp, "expert_top_logp", "float32", ["k_expert"]);
  g.output(expertTop.ids, "expert_top_ids", "int64", ["k_expert"]);
  g.output(amateurTop.logp, "amateur_top_logp", "float32", ["k_amateur"]);
  g.output(amateurTop.ids, "amateur_top_ids", "int64", ["k_amateur"]);
  return g;
}


/** Both rows of a pair rounded to float16 (ties to even, overflow to infinity), in one run. */
export function buildHalfPrecisionGraph(vocabSize: number): GraphBuilder {
  if (!Number.isInteger(vocabSize) || vocabSize < 1) throw new MethodInputError("vocabSize", `must be a positive integer, got ${vocabSize}`);
  const g = new GraphBuilder();
  for (const model of ["expert", "amateur"]) {
    const row = g.input(model, "float32", [vocabSize]);
    g.output(g.op("Cast", [row], { to: int(ONNX_DATA_TYPE.float16) }), `${model}_half`, "float16", [vocabSize]);
  }
  return g;
}


/** One pair to summarize, with what its client asked for. */
export interface PairSummaryRequest extends SummarizeOptions {
  logpExpert: Float32Array;
  logpAmateur: Float32Array;
}

/** summarizeStep and the float16 rounding on ONNX Runtime sessions, for pairs of one vocabulary. */
export class PairSummaryGraph {
  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly halfSession: ort.InferenceSession,
    readonly vocabSize: number,
    readonly provider: ExecutionProvider,
  ) {}

  /** `options.threads` defaults to SUMMARY_THREADS here, whatever the models run with. */
  static async open(vocabSize: number, options: OrtSessionOptions = {}): Promise<PairSummaryGraph> {
    const sessionOptions = { ...options, threads: options.threads ?? SUMMARY_THREADS };
    const summary = encodeInline(buildPairSummaryGraph(vocabSize), { graphName: "pair_summary", docString: "SPARSE step summary of an expert/amateur log-probability pair" });
    const half = encodeInline(buildHalfPrecisionGraph(vocabSize), { graphName: "pair_float16", docString: "FULL float16 encoding of an expert/amateur log-probability pair" });
    const { sessions, provider } = await openGraphSet([summary, half], sessionOptions);
    return new PairSummaryGraph(sessions[0], sessions[1], vocabSize, provider);
  }

  /** float32ArrayToFloat16 of both rows, bit for bit (NaN aside: log-probabilities have none). */
  async toFloat16(logpExpert: Float32Array, logpAmateur: Float32Array): Promise<{ expert: Uint16Array; amateur: Uint16Array }> {
    this.checkRows(logpExpert, logpAmateur);
    const V = this.vocabSize;
    const out = await this.halfSession.run({ expert: new ort.Tensor("float32", logpExpert, [V]), amateur: new ort.Tensor("float32", logpAmateur, [V]) });
    return { expert: out.expert_half.data as Uint16Array, amateur: out.amateur_half.data as Uint16Array };
  }

  private checkRows(logpExpert: Float32Array, logpAmateur: Float32Array): void {
    assertSameVocabulary(logpExpert, logpAmateur);
    if (logpExpert.length !== this.vocabSize) {
      throw new MethodInputError("logpExpert", `covers ${logpExpert.length} tokens but the summary graph was built for ${this.vocabSize}`);
    }
  }

  /** summarizeStep(logpExpert, logpAmateur, { alpha, topK }), to SUMMARY_TOLERANCE. */
  async summarize(request: PairSummaryRequest): Promise<SparseStep> {
    const { logpExpert, logpAmateur, alpha, topK } = request;
    validateAlpha(alpha);
    if (!Number.isInteger(topK) || topK < 0) throw new MethodInputError("k", `must be a non-negative integer, got ${topK}`);
    this.checkRows(logpExpert, logpAmateur);
    const V = this.vocabSize;
    // TopK wants k >= 1; a top_k of 0 takes none of what it returns.
    const kExpert = Math.min(V, Math.max(topK, PLAUSIBLE_CANDIDATES));
    const kAmateur = Math.min(V, Math.max(1, topK));
    const out = await this.session.run({
      expert: new ort.Tensor("float32", logpExpert, [V]),
      amateur: new ort.Tensor("float32", logpAmateur, [V]),
      k_expert: new ort.Tensor("int64", BigInt64Array.of(BigInt(kExpert)), [1]),
      k_amateur: new ort.Tensor("int64", BigInt64Array.of(BigInt(kAmateur)), [1]),
    });
    const scalar = (name: string) => (out[name].data as Float32Array)[0];
    const [kl, negEntropy, expertMass, amateurMass] = ["kl", "neg_entropy", "expert_mass", "amateur_mass"].map(scalar);
    // -Infinity log-probabilities (masked tokens) make 0 * -Infinity terms; NaN anywhere is an
    // error that core/math names. Both take the exact JavaScript way.
    if (![kl, negEntropy, expertMass, amateurMass].every(Number.isFinite)) return summarizeStep(logpExpert, logpAmateur, { alpha, topK });
    const expertCandidates = candidatesOf(out.expert_top_logp, out.expert_top_ids);
    const plausibleIds = plausibleFromCandidates(expertCandidates, alpha, V) ?? plausibleSet(logpExpert, alpha);
    return {
      vocabSize: V,
      alpha,
      kl,
      expertEntropy: Math.max(0, -negEntropy),
      plausibleIds,
      plausibleLogpExpert: Float32Array.from(plausibleIds, (id) => logpExpert[id]),
      plausibleLogpAmateur: Float32Array.from(plausibleIds, (id) => logpAmateur[id]),
      expertTop: topOf(expertCandidates, topK, expertMass),
      amateurTop: topOf(candidatesOf(out.amateur_top_logp, out.amateur_top_ids), topK, amateurMass),
    };
  }

  async release(): Promise<void> {
    await Promise.all([this.session.release(), this.halfSession.release()]);
  }
}

/** A model's top tokens, most probable first, equal log-probabilities by lower id. */
export interface Candidates {
  ids: Int32Array;
  logp: Float32Array;
}

function candidatesOf(logp: ort.Tensor, ids: ort.Tensor): Candidates {
  return { logp: logp.data as Float32Array, ids: Int32Array.from(ids.data as BigInt64Array, Number) };
}

/**
 * The alpha-plausible set from the expert's top candidates, tested as plausibleSet tests it
 * (in float64, against the exact top value) and in its order; null when every candidate
 * passes and the vocabulary holds more, so the set may go on past them.
 */
export function plausibleFromCandidates(candidates: Candidates, alpha: number, vocabSize: number): Int32Array | null {
  const max = candidates.logp[0];
  if (!Number.isFinite(max)) throw new MethodInputError("logpExpert", "has no token with finite log-probability");
  const logAlpha = Math.log(alpha);
  let n = 0;
  while (n < candidates.logp.length && candidates.logp[n] - max >= logAlpha) n++;
  if (n === candidates.logp.length && n < vocabSize) return null;
  return candidates.ids.slice(0, n);
}

/** The first k candidates and the mass of all the others: the row's mass minus theirs, never below 0. */
function topOf(candidates: Candidates, k: number, rowMass: number): TopK {
  const n = Math.min(k, candidates.ids.length);
  let listed = 0;
  for (let j = 0; j < n; j++) listed += Math.exp(candidates.logp[j]);
  return { ids: candidates.ids.slice(0, n), logp: candidates.logp.slice(0, n), restMass: Math.max(0, rowMass - listed) };
}
