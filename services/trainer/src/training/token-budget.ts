// A budget of tuned tokens (labelled positions), so one method can be trained on exactly as
// many as another: the SFT baseline stopped where a LightReasoner run stopped. The step that
// reaches the budget trains on only the first labels that fit, in batch order (micro-batches,
// then their trajectories, then each trajectory's labels), so a run ends on the budget
// exactly rather than up to a whole step past it.
import type { MicroBatch } from "./batching.ts";

/** Labelled positions in a step's micro-batches. */
export const labelsIn = (micro: readonly MicroBatch[]): number => micro.reduce((n, b) => n + b.chunks.reduce((m, c) => m + c.targets.length, 0), 0);

/**
 * The step's micro-batches cut to `remaining` labels: the first ones in batch order are kept,
 * trajectories (and micro-batches) left with none are dropped. A micro-batch counted in
 * trajectories (units = its chunks) keeps one unit per trajectory left; one counted in
 * labels keeps one per label. remaining must be >= 1.
 */
export function cutToBudget(micro: readonly MicroBatch[], remaining: number): MicroBatch[] {
  if (!(Number.isInteger(remaining) && remaining >= 1)) throw new Error(`a step's token budget must be a whole number >= 1, got ${remaining}`);
  if (labelsIn(micro) <= remaining) return [...micro];
  const cut: MicroBatch[] = [];
  let left = remaining;
  for (const batch of micro) {
    if (left === 0) break;
    const perTrajectory = batch.units === batch.chunks.length;
    const chunks = [];
    for (const chunk of batch.chunks) {
      if (left === 0) break;
      const targets = chunk.targets.slice(0, left);
      left -= targets.length;
      if (targets.length > 0) chunks.push({ trajectory: chunk.trajectory, targets });
    }
    const labels = chunks.reduce((n, c) => n + c.targets.length, 0);
    cut.push({ chunks, units: perTrajectory ? chunks.length : labels, cursor: batch.cursor });
  }
  return cut;
}
