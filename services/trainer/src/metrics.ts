// Prometheus metrics of the trainer, in a registry of its own (several trainers in one test
// process never collide). They follow the method: steps seen and kept, the KL of every
// step, the share kept, the training loss and speed, adapters handed to the inference
// service, and how many runs are in each state. No label carries a run id, so the series
// stay few however many runs a trainer has seen.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { RunStateName } from "./runs/run-record.ts";

const PREFIX = "lightreasoner_trainer_";
const RUN_STATES: readonly RunStateName[] = ["pending", "running", "succeeded", "failed", "cancelled"];

export class TrainerMetrics {
  readonly registry = new Registry();
  readonly stepsSeen = new Counter({ name: `${PREFIX}steps_seen_total`, help: "Trajectory steps received from the inference endpoints", registers: [this.registry] });
  readonly stepsSelected = new Counter({ name: `${PREFIX}steps_selected_total`, help: "Steps kept: KL above beta (LightReasoner) or tokens of accepted trajectories (SFT)", registers: [this.registry] });
  // The method's default beta is 0.4 nats; buckets resolve the region around it.
  readonly stepKl = new Histogram({ name: `${PREFIX}step_kl_nats`, help: "KL(expert || amateur) of each step seen, nats", buckets: [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10], registers: [this.registry] });
  readonly selectionRatio = new Gauge({ name: `${PREFIX}selection_ratio`, help: "Steps selected / steps seen in the current run", registers: [this.registry] });
  readonly problemsSampled = new Counter({ name: `${PREFIX}problems_sampled_total`, help: "Problems whose trajectory was stored", registers: [this.registry] });
  readonly loss = new Gauge({ name: `${PREFIX}loss_nats`, help: "Loss of the latest optimizer step, nats per sample", registers: [this.registry] });
  readonly optimizerSteps = new Counter({ name: `${PREFIX}optimizer_steps_total`, help: "Optimizer steps taken", registers: [this.registry] });
  readonly samplesPerSecond = new Gauge({ name: `${PREFIX}samples_per_second`, help: "Training samples per second of the latest optimizer step", registers: [this.registry] });
  readonly adaptersPushed = new Counter({ name: `${PREFIX}adapters_pushed_total`, help: "Adapter versions pushed to the inference endpoints", registers: [this.registry] });
  readonly lastProgress = new Gauge({ name: `${PREFIX}last_progress_timestamp_seconds`, help: "Unix time of the last step received or optimizer step taken", registers: [this.registry] });
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

  /** Marks work happening now (for the "training stalled" alert). */
  progressed(): void {
    this.lastProgress.set(Date.now() / 1000);
  }
}
