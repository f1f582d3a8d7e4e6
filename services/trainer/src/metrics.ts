// Prometheus metrics of the trainer, in a registry of its own (several trainers in one test
// process never collide). They follow the method: steps seen and kept, the KL of every
// step, the share kept, the training loss and speed, adapters handed to the inference
// service, and how many runs are in each state. Several runs may be in flight at once, so a
// value that belongs to one run (its selection ratio, loss, speed, last progress) is a gauge
// with a `run` label set by that run: unlabelled, two runs would overwrite each other. The
// counters and the KL histogram stay unlabelled: they are totals over every run (what a rate()
// over the trainer wants), and a run label on them would add series per run and per bucket.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { RunStateName } from "./runs/run-record.ts";

const PREFIX = "lightreasoner_trainer_";
/** The label of every per-run gauge: the run id. */
const RUN_LABEL = ["run"] as const;
const RUN_STATES: readonly RunStateName[] = ["pending", "running", "succeeded", "failed", "cancelled"];

export class TrainerMetrics {
  readonly registry = new Registry();
  readonly stepsSeen = new Counter({ name: `${PREFIX}steps_seen_total`, help: "Trajectory steps received from the inference endpoints", registers: [this.registry] });
  readonly stepsSelected = new Counter({ name: `${PREFIX}steps_selected_total`, help: "Steps kept: KL above beta (LightReasoner) or tokens of accepted trajectories (SFT)", registers: [this.registry] });
  // The method's default beta is 0.4 nats; buckets resolve the region around it.
  readonly stepKl = new Histogram({ name: `${PREFIX}step_kl_nats`, help: "KL(expert || amateur) of each step seen, nats", buckets: [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10], registers: [this.registry] });
  readonly selectionRatio = new Gauge({ name: `${PREFIX}selection_ratio`, help: "Steps selected / steps seen, by run", labelNames: RUN_LABEL, registers: [this.registry] });
  readonly problemsSampled = new Counter({ name: `${PREFIX}problems_sampled_total`, help: "Problems whose trajectory was stored", registers: [this.registry] });
  readonly loss = new Gauge({ name: `${PREFIX}loss_nats`, help: "Loss of the run's latest optimizer step, nats per sample, by run", labelNames: RUN_LABEL, registers: [this.registry] });
  readonly optimizerSteps = new Counter({ name: `${PREFIX}optimizer_steps_total`, help: "Optimizer steps taken", registers: [this.registry] });
  readonly samplesPerSecond = new Gauge({ name: `${PREFIX}samples_per_second`, help: "Training samples per second of the run's latest optimizer step, by run", labelNames: RUN_LABEL, registers: [this.registry] });
  readonly adaptersPushed = new Counter({ name: `${PREFIX}adapters_pushed_total`, help: "Adapter versions pushed to the inference endpoints", registers: [this.registry] });
  // Only running runs have this series (see runStarted/runStopped): the stall alert fires per run.
  readonly lastProgress = new Gauge({ name: `${PREFIX}last_progress_timestamp_seconds`, help: "Unix time a running run started or last received a step or took an optimizer step, by run", labelNames: RUN_LABEL, registers: [this.registry] });
  readonly runs: Gauge<"state">;

  constructor(countRuns: () => Record<RunStateName, number>) {
    collectDefaultMetrics({ register: this.registry });
    // Read at scrape time from the run manager, so it can never drift from the runs' states.
    this.runs = new Gauge({
      name: `${PREFIX}runs`,
      help: "Runs known to this trainer, by state",
      labelNames: ["state"],
      registers: [this.registry],
      collect() {
        const counts = countRuns();
        for (const state of RUN_STATES) this.set({ state }, counts[state]);
      },
    });
  }

  /** A run was launched (or resumed): it counts as progressing from now, so one stuck before its first step still trips the stall alert. */
  runStarted(runId: string): void {
    this.progressed(runId);
  }

  /** Marks work of this run happening now (for the "training stalled" alert). */
  progressed(runId: string): void {
    this.lastProgress.set({ run: runId }, Date.now() / 1000);
  }

  /**
   * A run stopped (succeeded, failed or was cancelled): it makes no more progress, so its
   * last-progress series goes (left, it would age into a stall alert for a run that is over,
   * and the series would grow with every run). Its selection ratio, loss and speed stay: they
   * are the run's final values, and the trainer keeps the run (it has no way to delete one;
   * one added must remove these too, so the series follow the runs the trainer keeps).
   */
  runStopped(runId: string): void {
    this.lastProgress.remove({ run: runId });
  }
}
