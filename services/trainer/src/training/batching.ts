// Cuts a stream of trajectories into micro-batches of `batchSize` samples and remembers
// exactly where it is, so a resumed run reads the same data in the same order. An in-memory
// list is visited epoch after epoch, each in a seeded order of its own; an async stream
// (online mode: trajectories keep arriving) is read once, in arrival order. When a sample
// is a labelled position, a trajectory may be split between two micro-batches; the cursor
// then records how many of its labels were used.
import { SeededRandom } from "#core/math/random.ts";
import { TrajectoryError } from "./errors.ts";
import type { TrainingObjective } from "./objective.ts";
import type { Trajectory, TrajectoryTarget } from "./trajectory.ts";
import { checkTrajectory } from "./trajectory.ts";

export type TrajectorySource = readonly Trajectory[] | AsyncIterable<Trajectory>;

export interface DataCursor {
  /** Completed passes over an in-memory list (0 for a stream). */
  epoch: number;
  /** Trajectories of this epoch's order, or of the stream, fully used. */
  index: number;
  /** Labels of the trajectory at `index` already used. */
  targetOffset: number;
}

export const START: Readonly<DataCursor> = Object.freeze({ epoch: 0, index: 0, targetOffset: 0 });

/** Part of one trajectory in a micro-batch: the labels trained on this time. */
export interface Chunk {
  trajectory: Trajectory;
  targets: readonly TrajectoryTarget[];
}

export interface MicroBatch {
  chunks: Chunk[];
  /** Samples in the objective's unit (labelled positions or trajectories). */
  units: number;
  /** Where the next micro-batch starts. */
  cursor: DataCursor;
}

export interface BatchingOptions {
  objective: TrainingObjective;
  batchSize: number;
  vocabSize: number;
  seed: number;
  shuffle: boolean;
  /**
   * For lists of trajectories: sort each window of this many micro-batches by length before
   * cutting it, then shuffle the micro-batches, so little of a padded batch is padding.
   * 0 or 1: no grouping.
   */
  lengthGroups?: number;
}

/** The order of a list's `epoch`-th pass: seeded, a fresh permutation per epoch. */
export function epochOrder(lengths: readonly number[], epoch: number, options: Pick<BatchingOptions, "seed" | "shuffle" | "lengthGroups" | "batchSize">): number[] {
  const order = lengths.map((_, i) => i);
  if (!options.shuffle) return order;
  const random = new SeededRandom((Math.imul(options.seed ^ 0x2545f491, 0x9e3779b1) + Math.imul(epoch + 1, 0x85ebca6b)) >>> 0);
  shuffleInPlace(order, random);
  const groups = options.lengthGroups ?? 0;
  if (groups <= 1) return order;
  const window = groups * options.batchSize;
  const batches: number[][] = [];
  for (let start = 0; start < order.length; start += window) {
    const part = order.slice(start, start + window).sort((a, b) => lengths[a] - lengths[b] || a - b);
    for (let b = 0; b < part.length; b += options.batchSize) batches.push(part.slice(b, b + options.batchSize));
  }
  shuffleInPlace(batches, random);
  return batches.flat();
}

function shuffleInPlace<T>(items: T[], random: SeededRandom): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = random.int(i + 1);
    [items[i], items[j]] = [items[j], items[i]];
  }
}

interface Positioned {
  trajectory: Trajectory;
  labels: readonly TrajectoryTarget[];
  epoch: number;
  index: number;
}

/** A list, validated up front and repeated forever; the loop decides when to stop. */
async function* fromList(list: readonly Trajectory[], start: DataCursor, options: BatchingOptions): AsyncGenerator<Positioned> {
  const labels = list.map((t, i) => {
    checkTrajectory(t, options.vocabSize, `trajectories[${i}]`);
    return options.objective.labels(t);
  });
  if (!labels.some((l) => l.length > 0)) {
    throw new TrajectoryError("trajectories", `none of the ${list.length} trajectories has a position to train on (objective ${options.objective.name})`);
  }
  const lengths = list.map((t) => t.tokenIds.length);
  for (let epoch = start.epoch; ; epoch++) {
    const order = epochOrder(lengths, epoch, options);
    for (let index = epoch === start.epoch ? start.index : 0; index < order.length; index++) {
      yield { trajectory: list[order[index]], labels: labels[order[index]], epoch, index };
    }
  }
}

/** A stream read once; on resume the first `start.index` trajectories (already used) are skipped. */
async function* fromStream(stream: AsyncIterable<Trajectory>, start: DataCursor, options: BatchingOptions): AsyncGenerator<Positioned> {
  let index = 0;
  for await (const trajectory of stream) {
    if (index >= start.index) {
      checkTrajectory(trajectory, options.vocabSize, `trajectories[${index}]`);
      yield { trajectory, labels: options.objective.labels(trajectory), epoch: 0, index };
    }
    index++;
  }
}

/** Micro-batches from `start` on; a final short one when a stream ends. */
export async function* microBatches(source: TrajectorySource, start: DataCursor, options: BatchingOptions): AsyncGenerator<MicroBatch> {
  const items = Array.isArray(source) ? fromList(source as readonly Trajectory[], start, options) : fromStream(source as AsyncIterable<Trajectory>, start, options);
  const { batchSize, objective } = options;
  let chunks: Chunk[] = [];
  let units = 0;
  let cursor: DataCursor = { ...start };
  let first = true;
  for await (const { trajectory, labels, epoch, index } of items) {
    let offset = first && epoch === start.epoch && index === start.index ? start.targetOffset : 0;
    first = false;
    while (offset < labels.length) {
      const take = objective.unit === "trajectory" ? labels.length - offset : Math.min(batchSize - units, labels.length - offset);
      chunks.push({ trajectory, targets: labels.slice(offset, offset + take) });
      units += objective.unit === "trajectory" ? 1 : take;
      offset += take;
      cursor = offset < labels.length ? { epoch, index, targetOffset: offset } : { epoch, index: index + 1, targetOffset: 0 };
      if (units === batchSize) {
        yield { chunks, units, cursor };
        chunks = [];
        units = 0;
      }
    }
    if (labels.length === 0) cursor = { epoch, index: index + 1, targetOffset: 0 };
  }
  if (units > 0) yield { chunks, units, cursor };
}
