// The learning rate at each optimizer step: a linear warm-up to the peak, then constant, or a
// linear or cosine decay to a floor (a fraction of the peak) at the last step.
import { TrainingConfigError } from "./errors.ts";

export const SCHEDULE_KINDS = ["constant", "linear", "cosine"] as const;
export type ScheduleKind = (typeof SCHEDULE_KINDS)[number];

export interface LearningRateSchedule {
  kind: ScheduleKind;
  peak: number;
  /** Optimizer steps of the run; the decay reaches the floor at the last one. */
  totalSteps: number;
  warmupSteps: number;
  /** The floor as a fraction of the peak, in [0, 1]. */
  minRatio: number;
}

export function checkSchedule(s: LearningRateSchedule): void {
  if (!(s.peak > 0) || !Number.isFinite(s.peak)) throw new TrainingConfigError("learningRate", `must be a finite number > 0, got ${s.peak}`);
  if (!Number.isInteger(s.totalSteps) || s.totalSteps < 1) throw new TrainingConfigError("maxSteps", `must be an integer >= 1, got ${s.totalSteps}`);
  if (!Number.isInteger(s.warmupSteps) || s.warmupSteps < 0 || s.warmupSteps >= s.totalSteps) {
    throw new TrainingConfigError("warmupSteps", `must be an integer in [0, maxSteps - 1] = [0, ${s.totalSteps - 1}], got ${s.warmupSteps}`);
  }
  if (!(s.minRatio >= 0 && s.minRatio <= 1)) throw new TrainingConfigError("minLearningRateRatio", `must be in [0, 1], got ${s.minRatio}`);
}

/**
 * The rate for optimizer step `step` (0-based). Warm-up: peak * (step + 1) / warmupSteps, so
 * the first step already moves and the last warm-up step is at the peak. Decay runs over the
 * remaining steps from the peak (step = warmupSteps) to the floor (the last step).
 */
export function learningRateAt(s: LearningRateSchedule, step: number): number {
  if (step < s.warmupSteps) return (s.peak * (step + 1)) / s.warmupSteps;
  if (s.kind === "constant") return s.peak;
  const span = s.totalSteps - 1 - s.warmupSteps;
  const progress = span <= 0 ? 0 : Math.min(1, (step - s.warmupSteps) / span);
  const shape = s.kind === "linear" ? 1 - progress : 0.5 * (1 + Math.cos(Math.PI * progress));
  return s.peak * (s.minRatio + (1 - s.minRatio) * shape);
}
