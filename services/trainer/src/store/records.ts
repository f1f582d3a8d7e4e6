// What the sample store holds: one record per finished problem (its token-exact trajectory,
// the KL of every step, the selected steps with their contrastive targets, the answer
// check) and the views the rest of the trainer reads from it: per-sample records, the
// training unit (one sequence with a loss at every selected position) and the SFT unit.
import { z } from "zod";

export const STORE_FORMAT_VERSION = 1;

/** How a stored trajectory ended ("imported": rebuilt from the reference's sample format). */
export type StoredFinishReason = "length" | "stop_string" | "eos" | "context_limit" | "imported";

/** A step kept by the beta filter, with its contrastive soft label v_C. */
export interface SelectedStep {
  /** Index of the predicted token within the completion; its prefix is completion[0..step). */
  step: number;
  /** Full-vocabulary KL(p_E || p_A) at this step, nats. */
  kl: number;
  /** The expert's alpha-plausible set, most probable first. */
  ids: number[];
  /** v_C on `ids`, same order; sums to 1. */
  weights: number[];
  /** Imported samples only: the step the reference's file gave (its text prefix re-encoded may have another length). */
  sourceStep?: number;
}

export interface AnswerCheck {
  /** The number extracted from the completion, null when it has none. */
  predicted: number | null;
  /** The problem's reference answer, null when the problem has none. */
  reference: number | null;
  /** null when there is no reference to compare with. */
  correct: boolean | null;
}

/** One line of the store: everything sampling learned from one problem. */
export interface TrajectoryRecord {
  v: typeof STORE_FORMAT_VERSION;
  kind: "trajectory" | "imported";
  /** Unique within a store: what a restarted run uses to skip finished problems. */
  problemId: string;
  question: string;
  /** The ids both models were conditioned on, exactly as the inference server encoded them. */
  promptTokenIds: number[];
  /** The tokens the expert wrote, exactly as streamed (never re-encoded text). */
  completionTokenIds: number[];
  completionText: string;
  /** Adapter of the expert that wrote it ("" is the base expert). */
  adapterVersion: string;
  finishReason: StoredFinishReason;
  /** The sampler seed the trajectory was written with (null when imported). */
  seed: number | null;
  /** Trajectories written for this problem (SFT may try several; this record holds the last). */
  attempts: number;
  /** Steps received for this problem over all attempts (0 for imported records). */
  stepsSeen: number;
  /** KL of every step of this trajectory, index = step (empty when no distributions were asked for). */
  stepKls: number[];
  /** Selected steps, ascending by step. */
  selected: SelectedStep[];
  answer: AnswerCheck;
}

/** One selected step as a stand-alone sample, the unit the reference's scripts store. */
export interface SelectedSample {
  problemId: string;
  question: string;
  step: number;
  /** Index of the predicted token in the whole sequence: promptLength + step. */
  position: number;
  /** promptTokenIds + completionTokenIds[0..step): the exact ids the distributions were computed on. */
  prefixTokenIds: number[];
  ids: number[];
  weights: number[];
  kl: number;
  adapterVersion: string;
}

/** A loss term: the token at `position` should follow the distribution `weights` over `ids`. */
export interface TrainingTarget {
  /**
   * Index of the predicted token in tokenIds; the logits that predict it are the model's
   * output at position - 1. At most tokenIds.length (an imported sample's own next token
   * is not known, so its target may sit just past the end).
   */
  position: number;
  ids: number[];
  weights: number[];
}

/** The training unit: one causal forward over tokenIds gives the logits for every target. */
export interface TrainingTrajectory {
  problemId: string;
  tokenIds: number[];
  promptLength: number;
  /** Ascending by position, each in [promptLength, tokenIds.length]. */
  targets: TrainingTarget[];
  adapterVersion: string;
}

const tokenId = z.number().int().min(0);
const finite = z.number().refine(Number.isFinite, "must be a finite number");

const selectedStepSchema = z.object({
  step: z.number().int().min(0),
  kl: finite,
  ids: z.array(tokenId).min(1),
  weights: z.array(finite.refine((w) => w >= 0, "must be >= 0")).min(1),
  sourceStep: z.number().int().min(0).optional(),
});

export const trajectoryRecordSchema = z
  .object({
    v: z.literal(STORE_FORMAT_VERSION),
    kind: z.enum(["trajectory", "imported"]),
    problemId: z.string().min(1),
    question: z.string(),
    promptTokenIds: z.array(tokenId).min(1),
    completionTokenIds: z.array(tokenId),
    completionText: z.string(),
    adapterVersion: z.string(),
    finishReason: z.enum(["length", "stop_string", "eos", "context_limit", "imported"]),
    seed: z.number().int().min(0).max(0xffffffff).nullable(),
    attempts: z.number().int().min(1),
    stepsSeen: z.number().int().min(0),
    stepKls: z.array(finite),
    selected: z.array(selectedStepSchema),
    answer: z.object({ predicted: finite.nullable(), reference: finite.nullable(), correct: z.boolean().nullable() }),
  })
  .strict()
  .superRefine((r, ctx) => {
    const issue = (path: (string | number)[], message: string) => ctx.addIssue({ code: "custom", path, message });
    // A written step's prefix lies inside the completion; an imported target may predict the token after it.
    const lastStep = r.kind === "imported" ? r.completionTokenIds.length : r.completionTokenIds.length - 1;
    if (r.stepKls.length > 0 && r.stepKls.length !== r.completionTokenIds.length) {
      issue(["stepKls"], `has ${r.stepKls.length} entries for ${r.completionTokenIds.length} completion tokens`);
    }
    r.selected.forEach((s, i) => {
      if (s.step > lastStep) issue(["selected", i, "step"], `${s.step} is past the completion (${r.completionTokenIds.length} tokens)`);
      if (i > 0 && s.step <= r.selected[i - 1].step) issue(["selected", i, "step"], "steps must be strictly ascending");
      if (s.weights.length !== s.ids.length) issue(["selected", i, "weights"], `has ${s.weights.length} entries for ${s.ids.length} ids`);
    });
  });

/** Field path of a zod issue as the error names it, e.g. "selected.2.weights". */
export function issuePath(path: readonly PropertyKey[]): string {
  return path.map(String).join(".");
}

/** The per-sample view of one record, ascending by step. */
export function recordSamples(record: TrajectoryRecord): SelectedSample[] {
  const promptLength = record.promptTokenIds.length;
  return record.selected.map((s) => ({
    problemId: record.problemId,
    question: record.question,
    step: s.step,
    position: promptLength + s.step,
    prefixTokenIds: [...record.promptTokenIds, ...record.completionTokenIds.slice(0, s.step)],
    ids: s.ids,
    weights: s.weights,
    kl: s.kl,
    adapterVersion: record.adapterVersion,
  }));
}

/** The LightReasoner training unit of one record; null when it has no selected step. */
export function recordTrajectory(record: TrajectoryRecord): TrainingTrajectory | null {
  if (record.selected.length === 0) return null;
  const promptLength = record.promptTokenIds.length;
  // Tokens after the last selected one never influence a target's logits (causal attention).
  const completion = record.completionTokenIds.slice(0, record.selected[record.selected.length - 1].step + 1);
  return {
    problemId: record.problemId,
    tokenIds: [...record.promptTokenIds, ...completion],
    promptLength,
    targets: record.selected.map((s) => ({ position: promptLength + s.step, ids: s.ids, weights: s.weights })),
    adapterVersion: record.adapterVersion,
  };
}

/**
 * The rejection-sampling SFT unit: a trajectory whose answer was right, whole, with no soft
 * targets (the SFT objective labels every completion token itself). Null for trajectories
 * that were wrong, unchecked or empty.
 */
export function recordSftTrajectory(record: TrajectoryRecord): TrainingTrajectory | null {
  if (record.answer.correct !== true || record.kind !== "trajectory" || record.completionTokenIds.length === 0) return null;
  const promptLength = record.promptTokenIds.length;
  return {
    problemId: record.problemId,
    tokenIds: [...record.promptTokenIds, ...record.completionTokenIds],
    promptLength,
    targets: [],
    adapterVersion: record.adapterVersion,
  };
}
