// The per-step distributions of both models in the encoding a client asked for: FULL as raw
// little-endian float32/float16 bytes of the log-probabilities, SPARSE as the method's
// quantities computed here over the full vocabulary, which is tens of bytes per step instead
// of two vocabulary-sized vectors. The server summarizes and rounds to float16 on ONNX
// Runtime (PairSummaryGraph: float32 sums within SUMMARY_TOLERANCE of core/math, float16 bit
// for bit); encodeDistributions keeps core/math's JavaScript, the exact reference the
// benchmarks set beside it.
import { endianness } from "node:os";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { FloatDtype } from "#core/gen/lightreasoner/v1/common_pb.ts";
import type { FullDistributionsSchema, SparseDistributionsSchema, TopTokensSchema } from "#core/gen/lightreasoner/v1/common_pb.ts";
import type { LogProbs, TopK } from "#core/math/distribution.ts";
import { float32ArrayToFloat16 } from "#core/math/float16.ts";
import type { SparseStep } from "#core/math/sparse-step.ts";
import { summarizeStep } from "#core/math/sparse-step.ts";
import type { PairSummaryGraph } from "#inference/model/pair-summary-graph.ts";
import type { DistributionSpec } from "./request.ts";

export type EncodedDistributions =
  | { case: "full"; value: MessageInitShape<typeof FullDistributionsSchema> }
  | { case: "sparse"; value: MessageInitShape<typeof SparseDistributionsSchema> }
  | { case: undefined };

const littleEndianHost = endianness() === "LE";

/** The bytes of a typed array as the wire wants them: little-endian, whatever the host. */
function littleEndianBytes(values: Float32Array | Uint16Array): Uint8Array {
  const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  if (littleEndianHost) return bytes;
  const out = new Uint8Array(bytes.length);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => (values instanceof Float32Array ? view.setFloat32(i * 4, v, true) : view.setUint16(i * 2, v, true)));
  return out;
}

function encodeFull(logp: LogProbs, dtype: "float32" | "float16"): Uint8Array {
  return littleEndianBytes(dtype === "float32" ? logp : float32ArrayToFloat16(logp));
}

function topTokens(top: TopK): MessageInitShape<typeof TopTokensSchema> {
  return { tokenIds: Array.from(top.ids), logProbs: Array.from(top.logp), omittedMass: Math.min(1, Math.max(0, top.restMass)) };
}

/** Both models' distributions over the same position, encoded; `case: undefined` for NONE. SPARSE is summarized in JavaScript. */
export function encodeDistributions(logpExpert: LogProbs, logpAmateur: LogProbs, spec: DistributionSpec): EncodedDistributions {
  if (spec.encoding !== "sparse") return encodeUnsummarized(logpExpert, logpAmateur, spec);
  return sparseDistributions(summarizeStep(logpExpert, logpAmateur, { alpha: spec.alpha, topK: spec.topK }), spec.topK);
}

/** The same encoding as the server sends it: SPARSE summarized and FULL float16 rounded by ONNX Runtime. */
export async function encodeStepDistributions(logpExpert: LogProbs, logpAmateur: LogProbs, spec: DistributionSpec, pairGraphs: PairSummaryGraph): Promise<EncodedDistributions> {
  if (spec.encoding === "sparse") {
    return sparseDistributions(await pairGraphs.summarize({ logpExpert, logpAmateur, alpha: spec.alpha, topK: spec.topK }), spec.topK);
  }
  if (spec.encoding === "full" && spec.dtype === "float16") {
    const half = await pairGraphs.toFloat16(logpExpert, logpAmateur);
    return { case: "full", value: { dtype: FloatDtype.FLOAT16, expertLogProbs: littleEndianBytes(half.expert), amateurLogProbs: littleEndianBytes(half.amateur) } };
  }
  return encodeUnsummarized(logpExpert, logpAmateur, spec);
}

function encodeUnsummarized(logpExpert: LogProbs, logpAmateur: LogProbs, spec: Exclude<DistributionSpec, { encoding: "sparse" }>): EncodedDistributions {
  if (spec.encoding === "none") return { case: undefined };
  return {
    case: "full",
    value: {
      dtype: spec.dtype === "float32" ? FloatDtype.FLOAT32 : FloatDtype.FLOAT16,
      expertLogProbs: encodeFull(logpExpert, spec.dtype),
      amateurLogProbs: encodeFull(logpAmateur, spec.dtype),
    },
  };
}

function sparseDistributions(summary: SparseStep, topK: number): EncodedDistributions {
  return {
    case: "sparse",
    value: {
      klDivergence: summary.kl,
      expertEntropy: summary.expertEntropy,
      plausibleTokenIds: Array.from(summary.plausibleIds),
      plausibleExpertLogProbs: Array.from(summary.plausibleLogpExpert),
      plausibleAmateurLogProbs: Array.from(summary.plausibleLogpAmateur),
      // Left unset when top_k is 0: nothing to list, nothing to send.
      expertTop: topK > 0 ? topTokens(summary.expertTop) : undefined,
      amateurTop: topK > 0 ? topTokens(summary.amateurTop) : undefined,
    },
  };
}
