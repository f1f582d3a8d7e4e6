// The training units of a finished sample store, for either method, in problem-id order: the
// store's own order is the order problems happened to finish in (it depends on concurrency,
// endpoints and interruptions), and an offline run's data order, hence its adapter, must not.
import { recordSftTrajectory, recordTrajectory } from "./records.ts";
import type { TrainingTrajectory, TrajectoryRecord } from "./records.ts";

export type TrainingMethodName = "lightreasoner" | "sft";

/** The record's training unit for `method`, or null when it has none (no selected step; a wrong answer). */
export function unitOf(method: TrainingMethodName): (record: TrajectoryRecord) => TrainingTrajectory | null {
  return method === "sft" ? recordSftTrajectory : recordTrajectory;
}

export function trainingSet(records: readonly TrajectoryRecord[], method: TrainingMethodName): TrainingTrajectory[] {
  const unit = unitOf(method);
  return [...records]
    .sort((a, b) => (a.problemId < b.problemId ? -1 : a.problemId > b.problemId ? 1 : 0))
    .map(unit)
    .filter((t): t is TrainingTrajectory => t !== null);
}
