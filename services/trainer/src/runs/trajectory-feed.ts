// Online mode's training data, one stream the trainer reads while sampling writes: first the
// store's trajectories in the order stored, then each new one the moment sampling stores it,
// and once sampling is over, further passes over all of them in a seeded order of their own,
// for as long as training wants more. The order depends only on the store's order and the
// seed, so a resumed run (which skips the trajectories it already used) reads exactly what an
// uninterrupted one would have read next.
import type { SampleStore } from "../store/sample-store.ts";
import type { TrainingTrajectory, TrajectoryRecord } from "../store/records.ts";
import { epochOrder } from "../training/batching.ts";

export type ToTrajectory = (record: TrajectoryRecord) => TrainingTrajectory | null;

export class TrajectoryFeed implements AsyncIterable<TrainingTrajectory> {
  private readonly items: TrainingTrajectory[] = [];
  private readonly unsubscribe: () => void;
  private samplingOver = false;
  private failure: Error | null = null;
  private wakeUp: (() => void) | null = null;

  constructor(
    store: SampleStore,
    toTrajectory: ToTrajectory,
    private readonly seed: number,
  ) {
    for (const record of store.all()) this.add(toTrajectory(record));
    this.unsubscribe = store.subscribe((record) => {
      this.add(toTrajectory(record));
      this.wake();
    });
  }

  /** Trajectories that arrived so far. */
  get size(): number {
    return this.items.length;
  }

  /** Sampling stored its last problem: after the first pass, the feed repeats what it has. */
  finishSampling(): void {
    this.samplingOver = true;
    this.unsubscribe();
    this.wake();
  }

  /** Sampling failed: the reader gets the error. */
  fail(err: Error): void {
    this.failure ??= err;
    this.unsubscribe();
    this.wake();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<TrainingTrajectory> {
    let next = 0;
    for (;;) {
      if (this.failure) throw this.failure;
      if (next < this.items.length) {
        yield this.items[next++];
      } else if (this.samplingOver) {
        break;
      } else {
        await new Promise<void>((resolve) => (this.wakeUp = resolve));
      }
    }
    // An empty store would make every further pass empty: end instead of spinning.
    if (this.items.length === 0) return;
    const lengths = this.items.map((t) => t.tokenIds.length);
    for (let epoch = 1; ; epoch++) {
      for (const i of epochOrder(lengths, epoch, { seed: this.seed, shuffle: true, batchSize: 1 })) yield this.items[i];
    }
  }

  private add(trajectory: TrainingTrajectory | null): void {
    if (trajectory) this.items.push(trajectory);
  }

  private wake(): void {
    const wakeUp = this.wakeUp;
    this.wakeUp = null;
    wakeUp?.();
  }
}
