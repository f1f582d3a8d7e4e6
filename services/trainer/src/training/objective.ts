// What a trainer fits, as data for the one training loop: which positions of a trajectory
// carry a label, and what counts as one sample for the batch size. LightReasoner trains on
// the soft labels of its selected steps, batched by step (the reference's batch of 8 is 8
// samples); SFT and pretraining put a one-hot label on every token, batched by sequence.
// Both losses are softLabelKl (with a one-hot label it is the cross-entropy), averaged over
// the labelled positions of each micro-batch.
import type { Trajectory, TrajectoryTarget } from "./trajectory.ts";
import { everyTokenTargets } from "./trajectory.ts";

export type BatchUnit = "target" | "trajectory";

export interface TrainingObjective {
  /** Recorded in checkpoints, so a run cannot resume under another objective. */
  name: string;
  /** One sample is one labelled position ("target") or one whole trajectory. */
  unit: BatchUnit;
  /** The labelled positions of a trajectory, in position order. */
  labels(trajectory: Trajectory): readonly TrajectoryTarget[];
}

/** METHOD.md stage 2: KL(v_C || q) at each selected step. */
export const lightReasonerObjective: TrainingObjective = {
  name: "lightreasoner-kl",
  unit: "target",
  labels: (t) => [...t.targets].sort((a, b) => a.position - b.position),
};

/**
 * Next-token cross-entropy on every token of the completion (`completionOnly`) or of the
 * whole sequence; the trajectory's own soft targets are ignored.
 */
export function crossEntropyObjective(options: { completionOnly: boolean }): TrainingObjective {
  return options.completionOnly
    ? { name: "cross-entropy-completion", unit: "trajectory", labels: (t) => everyTokenTargets(t.tokenIds, t.promptLength) }
    : { name: "cross-entropy-all-tokens", unit: "trajectory", labels: (t) => everyTokenTargets(t.tokenIds, 1) };
}
