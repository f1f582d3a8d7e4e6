// The method's per-step decisions (KL, beta filter, alpha-plausible set, contrastive soft
// label) from a TrajectoryStep as it arrives: SPARSE summaries go through selectFromSummary,
// FULL log-probabilities through selectStep. Plausible sets and weights are the same
// arithmetic on the same float32 values, so FULL float32 and SPARSE give the same samples;
// the KL of a SPARSE step is the inference server's float32 sum (within SUMMARY_TOLERANCE of
// this float64 one, so only a KL that close to beta could be decided differently). FULL
// float16 rounds the log-probabilities on the wire first, so its KL and weights differ slightly.
import { endianness } from "node:os";
import { FloatDtype } from "#core/gen/lightreasoner/v1/common_pb.ts";
import type { FullDistributions, SparseDistributions, TopTokens } from "#core/gen/lightreasoner/v1/common_pb.ts";
import type { TrajectoryStep } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import type { TopK } from "#core/math/distribution.ts";
import { float16ArrayToFloat32 } from "#core/math/float16.ts";
import { MethodInputError } from "#core/math/errors.ts";
import { selectStep } from "#core/math/selection.ts";
import type { StepSelection } from "#core/math/selection.ts";
import { selectFromSummary, validateSparseStep } from "#core/math/sparse-step.ts";
import type { SparseStep } from "#core/math/sparse-step.ts";

export interface SelectionSettings {
  beta: number;
  alpha: number;
  /** Length of every distribution (GetModelInfo's vocab_size). */
  vocabSize: number;
  /** SPARSE only: the alpha the summaries were requested with (the plausible sets are cut there). */
  requestedAlpha?: number;
}

const littleEndianHost = endianness() === "LE";

/** Decides one step; a step without distributions or with malformed ones is a MethodInputError. */
export function selectionOf(step: TrajectoryStep, settings: SelectionSettings): StepSelection {
  const d = step.scored?.distributions;
  switch (d?.case) {
    case "sparse": {
      const summary = sparseStepOf(d.value, settings.vocabSize, settings.requestedAlpha ?? settings.alpha);
      validateSparseStep(summary, `step ${step.step}.scored.sparse`);
      return selectFromSummary(summary, { beta: settings.beta, alpha: settings.alpha });
    }
    case "full": {
      const { expert, amateur } = fullLogProbs(d.value, settings.vocabSize, `step ${step.step}.scored.full`);
      return selectStep({ logpExpert: expert, logpAmateur: amateur, alpha: settings.alpha, beta: settings.beta });
    }
    default:
      throw new MethodInputError(`step ${step.step}.scored.distributions`, "is missing; the trajectory was requested with distributions");
  }
}

export function sparseStepOf(sparse: SparseDistributions, vocabSize: number, alpha: number): SparseStep {
  return {
    vocabSize,
    alpha,
    kl: sparse.klDivergence,
    expertEntropy: sparse.expertEntropy,
    plausibleIds: Int32Array.from(sparse.plausibleTokenIds),
    plausibleLogpExpert: Float32Array.from(sparse.plausibleExpertLogProbs),
    plausibleLogpAmateur: Float32Array.from(sparse.plausibleAmateurLogProbs),
    expertTop: topKOf(sparse.expertTop),
    amateurTop: topKOf(sparse.amateurTop),
  };
}

function topKOf(top: TopTokens | undefined): TopK {
  if (!top) return { ids: new Int32Array(0), logp: new Float32Array(0), restMass: 1 };
  return { ids: Int32Array.from(top.tokenIds), logp: Float32Array.from(top.logProbs), restMass: top.omittedMass };
}

/** Both models' log-probabilities from FULL bytes (little-endian float32 or float16). */
export function fullLogProbs(full: FullDistributions, vocabSize: number, field = "full"): { expert: Float32Array; amateur: Float32Array } {
  return {
    expert: decode(full.expertLogProbs, full.dtype, vocabSize, `${field}.expert_log_probs`),
    amateur: decode(full.amateurLogProbs, full.dtype, vocabSize, `${field}.amateur_log_probs`),
  };
}

function decode(bytes: Uint8Array, dtype: FloatDtype, vocabSize: number, field: string): Float32Array {
  const half = dtype === FloatDtype.FLOAT16;
  const width = half ? 2 : 4;
  if (bytes.length !== vocabSize * width) {
    throw new MethodInputError(field, `holds ${bytes.length} bytes, expected ${vocabSize * width} (${vocabSize} ${half ? "float16" : "float32"} values)`);
  }
  // Copy into a buffer of its own: protobuf bytes may start at any offset, and a Node Buffer's
  // slice() is a view into a shared pool, not a copy.
  const aligned = new Uint8Array(bytes).buffer;
  if (littleEndianHost) return half ? float16ArrayToFloat32(new Uint16Array(aligned)) : new Float32Array(aligned);
  const view = new DataView(aligned);
  if (half) return float16ArrayToFloat32(Uint16Array.from({ length: vocabSize }, (_, i) => view.getUint16(2 * i, true)));
  return Float32Array.from({ length: vocabSize }, (_, i) => view.getFloat32(4 * i, true));
}
