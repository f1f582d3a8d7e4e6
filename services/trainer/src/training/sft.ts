// The paper's comparison baseline, rejection-sampling SFT: keep the trajectories whose final
// answer is right and fine-tune the same LoRA on them with cross-entropy on every completion
// token. It runs the LightReasoner trainer's loop with the cross-entropy objective, so
// batching, optimizer, schedule, checkpoints and accounting are the same code; its tuned
// tokens are the completion tokens trained on.
import type { LoraTrainingOptions, LoraTrainingResult } from "./lora-trainer.ts";
import { trainLora } from "./lora-trainer.ts";
import { crossEntropyObjective } from "./objective.ts";
import type { Trajectory } from "./trajectory.ts";

/** Cross-entropy on the completion; a sample (for the batch size) is one trajectory. */
export const sftObjective = crossEntropyObjective({ completionOnly: true });

/** A kept trajectory as SFT trains on it: prompt and completion, no soft targets. */
export function sftTrajectory(promptIds: readonly number[], completionIds: readonly number[]): Trajectory {
  return { tokenIds: [...promptIds, ...completionIds], promptLength: promptIds.length, targets: [] };
}

/**
 * Rejection sampling's filter: the trajectories whose `isCorrect` holds. Kept as a function
 * of its own so the count of sampled versus kept trajectories is reported the same way by
 * every caller.
 */
export function keepCorrect<T>(candidates: readonly T[], isCorrect: (candidate: T) => boolean): { kept: T[]; rejected: number } {
  const kept = candidates.filter(isCorrect);
  return { kept, rejected: candidates.length - kept.length };
}

/** LoRA SFT on kept trajectories; options as for trainLora (the objective is fixed). */
export function trainSft(options: Omit<LoraTrainingOptions, "objective">): Promise<LoraTrainingResult> {
  return trainLora({ ...options, objective: sftObjective });
}
