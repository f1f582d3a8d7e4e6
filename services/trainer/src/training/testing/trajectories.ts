// Seeded random trajectories with soft targets for the trainer tests: varied lengths and
// numbers of selected steps (some trajectories with none, some with more than a batch), so
// batching has to split, skip and pad.
import { SeededRandom } from "#core/math/random.ts";
import type { Trajectory, TrajectoryTarget } from "#trainer/training/trajectory.ts";

export function randomTrajectories(count: number, vocabSize: number, seed: number, options: { maxTargets?: number } = {}): Trajectory[] {
  const random = new SeededRandom(seed);
  const maxTargets = options.maxTargets ?? 5;
  return Array.from({ length: count }, () => {
    const length = 6 + random.int(10);
    const tokenIds = Array.from({ length }, () => random.int(vocabSize));
    const promptLength = 2 + random.int(3);
    const positions = new Set<number>();
    const wanted = random.int(maxTargets + 1);
    for (let p = promptLength; p <= length && positions.size < wanted; p++) if (random.next() < 0.6) positions.add(p);
    const targets: TrajectoryTarget[] = [...positions].map((position) => {
      const size = 1 + random.int(3);
      const ids = new Set<number>();
      while (ids.size < size) ids.add(random.int(vocabSize));
      const raw = [...ids].map(() => 0.1 + random.next());
      const sum = raw.reduce((a, b) => a + b, 0);
      return { position, ids: [...ids], weights: raw.map((w) => w / sum) };
    });
    return { tokenIds, promptLength, targets };
  });
}

/** The same trajectories as an async stream, the way online mode delivers them. */
export async function* asStream(trajectories: readonly Trajectory[]): AsyncGenerator<Trajectory> {
  for (const t of trajectories) {
    await new Promise((resolve) => setImmediate(resolve));
    yield t;
  }
}
