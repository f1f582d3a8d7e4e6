// Temperature and nucleus sampling, computed by ONNX Runtime instead of JavaScript.
// core/math's sampleToken spends 2.7-3.8 ms of the event loop per draw at a vocabulary of
// 151,936 (a Math.exp per token, and a quickselect over the vocabulary for top-p < 1), so at
// 64 streams a tick of sampled trajectories paid ~170 ms or more for it, beside a ~400 ms model
// step. Here the same float64 weights are computed by vectorized kernels, one run per draw on
// the caller's row, with the sequence's same single uniform u.
//
// The draw is core/math's: weights exp((logp - max) / T), the nucleus (top-p < 1) the shortest
// run of the most probable tokens whose weight reaches top-p x total, the token the first whose
// running weight in id order passes u x the sum it is drawn from. The exps may differ from V8's
// by an ulp, so a target within SAMPLING_MARGIN of a boundary, a nucleus wider than the
// NUCLEUS_CANDIDATES best tokens, or a row whose sums are not finite goes to core/math: the
// token is core/math's token (for exps within an ulp of V8's). Contrastive sampling stays in core/math.
import * as ort from "onnxruntime-node";
import type { LogProbs } from "#core/math/distribution.ts";
import { MethodInputError } from "#core/math/errors.ts";
import type { SamplingOptions } from "#core/math/sampling.ts";
import { sampleToken, validateSampling } from "#core/math/sampling.ts";
import { RowChunks } from "./row-chunks.ts";
import { GraphBuilder, ONNX_DATA_TYPE, int } from "#core/formats/onnx-builder.ts";
import { encodeInline } from "#core/formats/onnx-file.ts";
import type { OrtSessionOptions } from "./execution-provider.ts";
import { openGraphSet } from "./execution-provider.ts";

/** One thread, the caller's: each kernel is a single pass over the row, too short for a pool to pay. */
const SAMPLING_THREADS = 1;

/** Above this many tokens in the nucleus, the draw takes core/math's way (a row nearly flat at that temperature). */
export const NUCLEUS_CANDIDATES = 256;

/**
 * How close, as a share of the sum it is cut from, a target may come to a running weight
 * before the draw goes to core/math. The graph computes every weight as core/math does, in
 * float64 from the same float64 exponent, except for the exp itself (ONNX Runtime's and V8's
 * each within about an ulp), and adds them in the same order; a running sum can then move by
 * a few ulps per token, under 1e-10 of the total at a 151,936-token vocabulary. Further from
 * every boundary than this, the graph's token is core/math's token.
 */
export const SAMPLING_MARGIN = 1e-9;

/** The row's weights exp((logp - max) / temperature) in float64, their running sum in id order as core/math adds them, and its last element, the total. */
function weightsOf(g: GraphBuilder, logp: string, temperature: string, vocabSize: number): { weights: string; cumulative: string; total: string } {
  const x = g.op("Cast", [logp], { to: int(ONNX_DATA_TYPE.float64) });
  const max = g.op("ReduceMax", [x], { keepdims: int(0) });
  const weights = g.op("Exp", [g.op("Div", [g.op("Sub", [x, max]), temperature])]);
  const cumulative = g.op("CumSum", [weights, g.int64([0], [])]);
  return { weights, cumulative, total: g.op("Gather", [cumulative, g.int64([vocabSize - 1])], { axis: int(0) }) };
}

/**
 * How many of the nondecreasing `running` lie at or below `target` (below it, when strict):
 * the index of the first past it, as int64 [1]. A count of ones is exact in float32 up to 2^24
 * and float32 sums measured cheapest.
 */
function countUpTo(g: GraphBuilder, running: string, target: string, strict = false): string {
  const ones = g.op("Cast", [g.op(strict ? "Less" : "LessOrEqual", [running, target])], { to: int(ONNX_DATA_TYPE.float32) });
  return g.op("Cast", [g.op("ReduceSum", [ones, g.int64([0])], { keepdims: int(1) })], { to: int(ONNX_DATA_TYPE.int64) });
}

/**
 * True when `target` lies further than SAMPLING_MARGIN x `scale` from the running weights on
 * either side of it (`count` of them before it, `last` the last index). False for NaN too.
 */
function clearOfBoundaries(g: GraphBuilder, running: string, target: string, count: string, last: string, scale: string): string {
  const at = (index: string) => g.op("Abs", [g.op("Sub", [g.op("Gather", [running, index], { axis: int(0) }), target])]);
  const below = at(g.op("Max", [g.op("Sub", [count, g.int64([1])]), g.int64([0])]));
  const above = at(g.op("Min", [count, last]));
  return g.op("Greater", [g.op("Min", [below, above]), g.op("Mul", [scale, g.float64([SAMPLING_MARGIN])])]);
}

function checkVocabulary(vocabSize: number): void {
  if (!Number.isInteger(vocabSize) || vocabSize < 1 || vocabSize > 2 ** 24) throw new MethodInputError("vocabSize", `must be a positive integer up to 2^24, got ${vocabSize}`);
}

/**
 * Temperature sampling over the whole vocabulary, scalar inputs temperature and u: the token
 * is the first whose running weight (id order) exceeds u * total. `clear` is false when u *
 * total lies within the weights' rounding of a boundary, or the sums are not finite.
 */
export function buildTemperatureSamplingGraph(vocabSize: number): GraphBuilder {
  checkVocabulary(vocabSize);
  const g = new GraphBuilder();
  const logp = g.input("logp", "float32", [vocabSize]);
  const u = g.input("u", "float64", []);
  const { cumulative, total } = weightsOf(g, logp, g.input("temperature", "float64", []), vocabSize);
  const target = g.op("Mul", [u, total]);
  const token = countUpTo(g, cumulative, target);
  g.output(token, "token", "int64", [1]);
  g.output(clearOfBoundaries(g, cumulative, target, token, g.int64([vocabSize - 1]), total), "clear", "bool", [1]);
  return g;
}

/**
 * Nucleus sampling, scalar inputs temperature, top_p and u. The nucleus is the shortest run of
 * the most probable tokens (equal ones by lower id) whose weight reaches top_p * total, found
 * among the NUCLEUS_CANDIDATES best (RowChunks.topK); the draw then walks it in id order, as
 * core/math's does over the weights it zeroed. `clear` is false when the nucleus did not end
 * among the candidates, or its edge or the draw lies within the weights' rounding of a boundary.
 */
export function buildNucleusSamplingGraph(vocabSize: number): GraphBuilder {
  checkVocabulary(vocabSize);
  const g = new GraphBuilder();
  const logp = g.input("logp", "float32", [vocabSize]);
  const temperature = g.input("temperature", "float64", []);
  const topP = g.input("top_p", "float64", []);
  const u = g.input("u", "float64", []);
  const { weights, total } = weightsOf(g, logp, temperature, vocabSize);
  const k = Math.min(NUCLEUS_CANDIDATES, vocabSize);
  const lastCandidate = g.int64([k - 1]);
  const candidates = new RowChunks(g, vocabSize).topK(logp, g.int64([k]));
  // The nucleus: the candidates up to the first whose running weight reaches top_p * total.
  const candidateWeights = g.op("Gather", [weights, candidates.ids], { axis: int(0) });
  const candidateRunning = g.op("CumSum", [candidateWeights, g.int64([0], [])]);
  const edge = g.op("Mul", [topP, total]);
  const before = countUpTo(g, candidateRunning, edge, true);
  const covered = g.op("Less", [before, g.int64([k])]);
  const edgeClear = clearOfBoundaries(g, candidateRunning, edge, before, lastCandidate, total);
  // At most k tokens: a nucleus that did not end among the candidates is core/math's to draw.
  const size = g.op("Min", [g.op("Add", [before, g.int64([1])]), g.int64([k])]);
  // Its ids in ascending order (exact in float32 up to 2^24), their weights, their running sum.
  const nucleusIds = g.op("Cast", [g.op("Slice", [candidates.ids, g.int64([0]), size, g.int64([0])])], { to: int(ONNX_DATA_TYPE.float32) });
  const nucleusWeights = g.op("Slice", [candidateWeights, g.int64([0]), size, g.int64([0])]);
  const [ascendingIds, order] = g.opMulti("TopK", [nucleusIds, size], { axis: int(0), largest: int(0), sorted: int(1) }, { outputs: [2] });
  const running = g.op("CumSum", [g.op("Gather", [nucleusWeights, order], { axis: int(0) }), g.int64([0], [])]);
  const last = g.op("Sub", [size, g.int64([1])]);
  const nucleusTotal = g.op("Gather", [running, last], { axis: int(0) });
  const target = g.op("Mul", [u, nucleusTotal]);
  const position = countUpTo(g, running, target);
  const drawClear = clearOfBoundaries(g, running, target, position, last, nucleusTotal);
  g.output(g.op("Cast", [g.op("Gather", [ascendingIds, g.op("Min", [position, last])], { axis: int(0) })], { to: int(ONNX_DATA_TYPE.int64) }), "token", "int64", [1]);
  g.output(g.op("And", [covered, g.op("And", [edgeClear, drawClear])]), "clear", "bool", [1]);
  return g;
}

/** Where a draw was made: on the graph, or core/math's way (a nucleus beyond the candidates, a row the sums cannot handle). */
export type DrawnBy = "graph" | "core_math";

/** sampleToken at temperature > 0 on ONNX Runtime sessions (one without a nucleus, one with), for rows of one vocabulary. */
export class SamplingGraph {
  private constructor(
    private readonly whole: ort.InferenceSession,
    private readonly nucleus: ort.InferenceSession,
    readonly vocabSize: number,
    private readonly drawn: (by: DrawnBy) => void,
  ) {}

  /** `options.threads` defaults to one here, whatever the models run with; `drawn` hears where each draw was made. */
  static async open(vocabSize: number, options: OrtSessionOptions = {}, drawn: (by: DrawnBy) => void = () => {}): Promise<SamplingGraph> {
    const sessionOptions = { ...options, threads: options.threads ?? SAMPLING_THREADS };
    const whole = encodeInline(buildTemperatureSamplingGraph(vocabSize), { graphName: "temperature_sampling", docString: "temperature sampling of one log-probability row" });
    const nucleus = encodeInline(buildNucleusSamplingGraph(vocabSize), { graphName: "nucleus_sampling", docString: "nucleus sampling of one log-probability row" });
    const { sessions } = await openGraphSet([whole, nucleus], sessionOptions);
    return new SamplingGraph(sessions[0], sessions[1], vocabSize, drawn);
  }

  /**
   * The token sampleToken(logp, { temperature, topP }, rng) draws when rng.next() gives `u`.
   * A draw the graph cannot vouch for (a target within SAMPLING_MARGIN of a boundary, a nucleus
   * wider than NUCLEUS_CANDIDATES, sums that are not finite) or a row that is not float32 takes
   * core/math's way with the same u.
   */
  async sample(logp: LogProbs, { temperature, topP = 1 }: SamplingOptions, u: number): Promise<number> {
    validateSampling({ temperature, topP });
    if (temperature === 0) throw new MethodInputError("temperature", "must be > 0 here: a greedy choice is no draw");
    if (!(u >= 0 && u < 1)) throw new MethodInputError("u", `must be in [0, 1), got ${u}`);
    if (logp.length !== this.vocabSize) throw new MethodInputError("logp", `covers ${logp.length} tokens but the sampling graph was built for ${this.vocabSize}`);
    if (!(logp instanceof Float32Array)) return this.byCoreMath(logp, { temperature, topP }, u);
    const feeds: Record<string, ort.Tensor> = {
      logp: new ort.Tensor("float32", logp, [this.vocabSize]),
      temperature: new ort.Tensor("float64", Float64Array.of(temperature), []),
      u: new ort.Tensor("float64", Float64Array.of(u), []),
    };
    if (topP < 1) feeds.top_p = new ort.Tensor("float64", Float64Array.of(topP), []);
    const out = await (topP < 1 ? this.nucleus : this.whole).run(feeds);
    const token = Number((out.token.data as BigInt64Array)[0]);
    if ((out.clear.data as Uint8Array)[0] === 1 && token < this.vocabSize) {
      this.drawn("graph");
      return token;
    }
    return this.byCoreMath(logp, { temperature, topP }, u);
  }

  private byCoreMath(logp: LogProbs, options: SamplingOptions, u: number): number {
    this.drawn("core_math");
    return sampleToken(logp, options, { next: () => u });
  }

  async release(): Promise<void> {
    await Promise.all([this.whole.release(), this.nucleus.release()]);
  }
}
