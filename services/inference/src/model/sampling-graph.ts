// Temperature sampling over the whole vocabulary, computed by ONNX Runtime instead of
// JavaScript. core/math's sampleToken spends about 2.7 ms of the event loop per draw at a
// vocabulary of 151,936 (a float64 Math.exp per token), so at 64 streams a tick of sampled
// trajectories paid ~170 ms for it, beside a ~400 ms model step. Here the exponentials are
// MLAS's vectorized float32 Exp and the sums float64, one run per draw on the caller's row.
//
// The draw is core/math's: weights exp((logp - max) / T), the token whose cumulative weight
// (in id order) first exceeds u * total, for the same single uniform u from the sequence's
// generator. The weights are rounded to float32 (about 1e-7 of each, up to ~1e-6 far in the
// tail where the exponent is large), so the token can differ from sampleToken's only when u *
// total falls within that rounding of a boundary between two tokens: about one draw in a
// million, and never for a given (row, u) from one run to the next. Nucleus sampling (top-p <
// 1) takes its nucleus from the row's best candidates and falls back to core/math when the
// nucleus is larger; contrastive sampling stays in core/math.
import * as ort from "onnxruntime-node";
import type { LogProbs } from "#core/math/distribution.ts";
import { MethodInputError } from "#core/math/errors.ts";
import type { SamplingOptions } from "#core/math/sampling.ts";
import { sampleToken } from "#core/math/sampling.ts";
import { RowChunks } from "./row-chunks.ts";
import { GraphBuilder, ONNX_DATA_TYPE, int } from "#core/formats/onnx-builder.ts";
import { encodeInline } from "#core/formats/onnx-file.ts";
import type { OrtSessionOptions } from "./execution-provider.ts";
import { openGraphSet } from "./execution-provider.ts";

/** One thread, the caller's: each kernel is a single pass over the row, too short for a pool to pay. */
const SAMPLING_THREADS = 1;

/** Above this many tokens in the nucleus, the draw takes core/math's way (a row nearly flat at that temperature). */
export const NUCLEUS_CANDIDATES = 256;

/** `w` the row's weights, float64(exp((logp - max(logp)) / temperature)) with the exponent in float32, and their running sum in id order. */
function weightsOf(g: GraphBuilder, logp: string, temperature: string): { weights: string; cumulative: string } {
  const max = g.op("ReduceMax", [logp], { keepdims: int(0) });
  const weights = g.op("Cast", [g.op("Exp", [g.op("Div", [g.op("Sub", [logp, max]), temperature])])], { to: int(ONNX_DATA_TYPE.float64) });
  return { weights, cumulative: g.op("CumSum", [weights, g.int64([0], [])]) };
}

/**
 * How many of the nondecreasing `cumulative` are <= `target`: the index of the first above it.
 * A count of ones is exact in float32 up to 2^24, and float32 sums measured cheapest.
 */
function countAtOrBelow(g: GraphBuilder, cumulative: string, target: string): string {
  return g.op("ReduceSum", [g.op("Cast", [g.op("LessOrEqual", [cumulative, target])], { to: int(ONNX_DATA_TYPE.float32) })], { keepdims: int(0) });
}

function checkVocabulary(vocabSize: number): void {
  if (!Number.isInteger(vocabSize) || vocabSize < 1 || vocabSize > 2 ** 24) throw new MethodInputError("vocabSize", `must be a positive integer up to 2^24, got ${vocabSize}`);
}

/**
 * Temperature sampling over the whole vocabulary, scalar inputs temperature and u: the token
 * is the first whose running weight (id order) exceeds u * total, the last element of that
 * running sum, as core/math adds the weights up.
 */
export function buildTemperatureSamplingGraph(vocabSize: number): GraphBuilder {
  checkVocabulary(vocabSize);
  const g = new GraphBuilder();
  const logp = g.input("logp", "float32", [vocabSize]);
  const u = g.input("u", "float64", []);
  const { cumulative } = weightsOf(g, logp, g.input("temperature", "float32", []));
  const total = g.op("Gather", [cumulative, g.int64([vocabSize - 1], [])], { axis: int(0) });
  g.output(countAtOrBelow(g, cumulative, g.op("Mul", [u, total])), "token", "float32", []);
  g.output(total, "total", "float64", []);
  return g;
}

/**
 * Nucleus sampling, scalar inputs temperature, top_p and u. The nucleus is the shortest run of
 * the most probable tokens (equal ones by lower id) whose weight reaches top_p * total, found
 * among the NUCLEUS_CANDIDATES best (RowChunks.topK); `covered` says it ended among them. The
 * draw then walks the nucleus in id order, as core/math's does over the weights it zeroed.
 */
export function buildNucleusSamplingGraph(vocabSize: number): GraphBuilder {
  checkVocabulary(vocabSize);
  const g = new GraphBuilder();
  const logp = g.input("logp", "float32", [vocabSize]);
  const temperature = g.input("temperature", "float32", []);
  const topP = g.input("top_p", "float64", []);
  const u = g.input("u", "float64", []);
  const { weights, cumulative } = weightsOf(g, logp, temperature);
  const total = g.op("Gather", [cumulative, g.int64([vocabSize - 1], [])], { axis: int(0) });
  const k = Math.min(NUCLEUS_CANDIDATES, vocabSize);
  const candidates = new RowChunks(g, vocabSize).topK(logp, g.int64([k]));
  // The nucleus is the candidates up to the first whose running weight reaches top_p * total.
  const candidateWeights = g.op("Gather", [weights, candidates.ids], { axis: int(0) });
  const below = g.op("ReduceSum", [g.op("Cast", [g.op("Less", [g.op("CumSum", [candidateWeights, g.int64([0], [])]), g.op("Mul", [topP, total])])], { to: int(ONNX_DATA_TYPE.float32) })], { keepdims: int(0) });
  // At most k: a nucleus not covered by the candidates is drawn by core/math (see `covered`).
  const size = g.op("Min", [g.op("Add", [g.op("Cast", [g.op("Reshape", [below, g.int64([1])])], { to: int(ONNX_DATA_TYPE.int64) }), g.int64([1])]), g.int64([k])]);
  // Its ids in ascending order (exact in float32 up to 2^24), their weights, their running sum.
  const nucleusIds = g.op("Cast", [g.op("Slice", [candidates.ids, g.int64([0]), size, g.int64([0])])], { to: int(ONNX_DATA_TYPE.float32) });
  const nucleusWeights = g.op("Slice", [candidateWeights, g.int64([0]), size, g.int64([0])]);
  const [ascendingIds, order] = g.opMulti("TopK", [nucleusIds, size], { axis: int(0), largest: int(0), sorted: int(1) }, { outputs: [2] });
  const running = g.op("CumSum", [g.op("Gather", [nucleusWeights, order], { axis: int(0) }), g.int64([0], [])]);
  const nucleusTotal = g.op("ReduceMax", [running], { keepdims: int(0) });
  // Past the end only through rounding: core/math then takes the last token it could draw.
  const position = g.op("Min", [g.op("Cast", [countAtOrBelow(g, running, g.op("Mul", [u, nucleusTotal]))], { to: int(ONNX_DATA_TYPE.int64) }), g.op("Sub", [size, g.int64([1])])]);
  g.output(g.op("Gather", [ascendingIds, position], { axis: int(0) }), "token", "float32", [1]);
  g.output(g.op("Less", [below, g.float32([k], [])]), "covered", "bool", []);
  g.output(total, "total", "float64", []);
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
   * A row the sums cannot handle (every token masked, NaN), or whose nucleus holds more than
   * NUCLEUS_CANDIDATES tokens, takes core/math's way with the same u.
   */
  async sample(logp: LogProbs, { temperature, topP = 1 }: SamplingOptions, u: number): Promise<number> {
    if (!(Number.isFinite(temperature) && temperature > 0)) throw new MethodInputError("temperature", `must be a finite number > 0 here, got ${temperature}`);
    if (!(topP > 0 && topP <= 1)) throw new MethodInputError("topP", `must be a number in (0, 1], got ${topP}`);
    if (!(u >= 0 && u < 1)) throw new MethodInputError("u", `must be in [0, 1), got ${u}`);
    if (logp.length !== this.vocabSize) throw new MethodInputError("logp", `covers ${logp.length} tokens but the sampling graph was built for ${this.vocabSize}`);
    const feeds: Record<string, ort.Tensor> = {
      logp: new ort.Tensor("float32", logp instanceof Float32Array ? logp : Float32Array.from(logp), [this.vocabSize]),
      temperature: new ort.Tensor("float32", Float32Array.of(temperature), []),
      u: new ort.Tensor("float64", Float64Array.of(u), []),
    };
    if (topP < 1) feeds.top_p = new ort.Tensor("float64", Float64Array.of(topP), []);
    const out = await (topP < 1 ? this.nucleus : this.whole).run(feeds);
    const total = (out.total.data as Float64Array)[0];
    const token = (out.token.data as Float32Array)[0];
    const covered = topP >= 1 || (out.covered.data as Uint8Array)[0] === 1;
    if (Number.isFinite(total) && total > 0 && covered && token < this.vocabSize) {
      this.drawn("graph");
      return token;
    }
    this.drawn("core_math");
    return sampleToken(logp, { temperature, topP }, { next: () => u });
  }

  async release(): Promise<void> {
    await Promise.all([this.whole.release(), this.nucleus.release()]);
  }
}
