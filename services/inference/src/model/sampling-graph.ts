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
// million, and never for a given (row, u) from one run to the next. Nucleus (top-p < 1) and
// contrastive sampling stay in core/math.
import * as ort from "onnxruntime-node";
import type { LogProbs } from "#core/math/distribution.ts";
import { MethodInputError } from "#core/math/errors.ts";
import { sampleToken } from "#core/math/sampling.ts";
import { GraphBuilder, ONNX_DATA_TYPE, int } from "#core/formats/onnx-builder.ts";
import { encodeInline } from "#core/formats/onnx-file.ts";
import type { OrtSessionOptions } from "./execution-provider.ts";
import { openOrtSession } from "./execution-provider.ts";

/** One thread, the caller's: each kernel is a single pass over the row, too short for a pool to pay. */
const SAMPLING_THREADS = 1;

/**
 * The graph over one [vocab] log-probability row, with scalar inputs temperature and u:
 *   w = float64(exp((logp - max(logp)) / temperature)), the exponent in float32
 *   token = the number of tokens whose cumulative weight is <= u * sum(w)
 * (cumulative weights never decrease, so that count is the first index above the target).
 */
export function buildTemperatureSamplingGraph(vocabSize: number): GraphBuilder {
  if (!Number.isInteger(vocabSize) || vocabSize < 1 || vocabSize > 2 ** 24) throw new MethodInputError("vocabSize", `must be a positive integer up to 2^24, got ${vocabSize}`);
  const g = new GraphBuilder();
  const logp = g.input("logp", "float32", [vocabSize]);
  const temperature = g.input("temperature", "float32", []);
  const u = g.input("u", "float64", []);
  const max = g.op("ReduceMax", [logp], { keepdims: int(0) });
  const weights = g.op("Cast", [g.op("Exp", [g.op("Div", [g.op("Sub", [logp, max]), temperature])])], { to: int(ONNX_DATA_TYPE.float64) });
  // The running sum in id order, as core/math adds them up; its last element is the total.
  const cumulative = g.op("CumSum", [weights, g.int64([0], [])]);
  const total = g.op("Gather", [cumulative, g.int64([vocabSize - 1], [])], { axis: int(0) });
  // A count of ones is exact in float32 up to 2^24 tokens, and float32 sums measured cheapest.
  const atOrBelow = g.op("Cast", [g.op("LessOrEqual", [cumulative, g.op("Mul", [u, total])])], { to: int(ONNX_DATA_TYPE.float32) });
  g.output(g.op("ReduceSum", [atOrBelow], { keepdims: int(0) }), "token", "float32", []);
  g.output(total, "total", "float64", []);
  return g;
}

/** sampleToken at temperature > 0 and top-p 1, on an ONNX Runtime session, for rows of one vocabulary. */
export class TemperatureSamplingGraph {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly vocabSize: number,
  ) {}

  /** `options.threads` defaults to one here, whatever the models run with. */
  static async open(vocabSize: number, options: OrtSessionOptions = {}): Promise<TemperatureSamplingGraph> {
    const graph = encodeInline(buildTemperatureSamplingGraph(vocabSize), { graphName: "temperature_sampling", docString: "temperature sampling of one log-probability row" });
    const { session } = await openOrtSession(graph, { ...options, threads: options.threads ?? SAMPLING_THREADS });
    return new TemperatureSamplingGraph(session, vocabSize);
  }

  /**
   * The token sampleToken(logp, { temperature }, rng) draws when rng.next() gives `u`. A row
   * the sums cannot handle (every token masked, NaN) takes core/math's way with the same u.
   */
  async sample(logp: LogProbs, temperature: number, u: number): Promise<number> {
    if (!(Number.isFinite(temperature) && temperature > 0)) throw new MethodInputError("temperature", `must be a finite number > 0 here, got ${temperature}`);
    if (!(u >= 0 && u < 1)) throw new MethodInputError("u", `must be in [0, 1), got ${u}`);
    if (logp.length !== this.vocabSize) throw new MethodInputError("logp", `covers ${logp.length} tokens but the sampling graph was built for ${this.vocabSize}`);
    const row = logp instanceof Float32Array ? logp : Float32Array.from(logp);
    const out = await this.session.run({
      logp: new ort.Tensor("float32", row, [this.vocabSize]),
      temperature: new ort.Tensor("float32", Float32Array.of(temperature), []),
      u: new ort.Tensor("float64", Float64Array.of(u), []),
    });
    const total = (out.total.data as Float64Array)[0];
    const token = (out.token.data as Float32Array)[0];
    if (Number.isFinite(total) && total > 0 && token < this.vocabSize) return token;
    return sampleToken(logp, { temperature }, { next: () => u });
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
