// Online mode's training data, one stream the trainer reads while sampling writes. The first
// pass gives each problem's trajectory in the order of the run's problem list, each as soon as
// it and every problem before it are stored (sampling works through the list in order, so it
// waits little); once sampling is over, further passes go over all of them in a seeded order
// of their own, for as long as training wants more. Nothing in the order depends on timing or
// on which replica finished first, so two runs with the same settings train on the same
// sequence, and a resumed run (which skips the trajectories it already used) reads exactly
// what an uninterrupted one would have read next.
import type { SampleStore } from "#trainer/store/sample-store.ts";
import type { TrainingTrajectory, TrajectoryRecord } from "#trainer/store/records.ts";
import { epochOrder } from "#trainer/training/batching.ts";

export type ToTrajectory = (record: TrajectoryRecord) => TrainingTrajectory | null;

export class TrajectoryFeed implements AsyncIterable<TrainingTrajectory> {
  private readonly items: TrainingTrajectory[] = [];
  /** Stored records whose turn has not come: an earlier problem is still being sampled. */
  private readonly early = new Map<string, TrajectoryRecord>();
  /** The run's problem ids in list order, each once (sampling skips repeats too). */
  private readonly order: readonly string[];
  private readonly inOrder: ReadonlySet<string>;
  /** Place in `order` of the next problem to hand over. */
  private turn = 0;
  private readonly unsubscribe: () => void;
  private samplingOver = false;
  private failure: Error | null = null;
  private wakeUp: (() => void) | null = null;

  /** `problemOrder`: the run's problem ids in list order; records of other ids (imported samples) go first, as stored. */
  constructor(
    store: SampleStore,
    private readonly toTrajectory: ToTrajectory,
    private readonly seed: number,
    problemOrder: readonly string[],
  ) {
    this.inOrder = new Set(problemOrder);
    this.order = [...this.inOrder];
    for (const record of store.all()) this.arrive(record);
    this.unsubscribe = store.subscribe((record) => {
      this.arrive(record);
      this.wake();
    });
  }

  /** Trajectories handed over so far. */
  get size(): number {
    return this.items.length;
  }

  /** Sampling stored its last problem (or stopped early): what is stored goes out in list order, gaps skipped. */
  finishSampling(): void {
    this.samplingOver = true;
    this.unsubscribe();
    for (; this.turn < this.order.length; this.turn++) {
      const record = this.early.get(this.order[this.turn]);
      if (record) this.handOver(record);
    }
    this.early.clear();
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

  private arrive(record: TrajectoryRecord): void {
    if (!this.inOrder.has(record.problemId)) {
      this.handOver(record);
      return;
    }
    this.early.set(record.problemId, record);
    for (let ready; this.turn < this.order.length && (ready = this.early.get(this.order[this.turn])); this.turn++) {
      this.handOver(ready);
      this.early.delete(ready.problemId);
    }
  }

  private handOver(record: TrajectoryRecord): void {
    const trajectory = this.toTrajectory(record);
    if (trajectory) this.items.push(trajectory);
  }

  private wake(): void {
    const wakeUp = this.wakeUp;
    this.wakeUp = null;
    wakeUp?.();
  }
}
