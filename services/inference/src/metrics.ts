// Prometheus metrics of one inference server, in a registry of its own (so several servers
// in one process, as in tests, never collide), served as text on their own HTTP port at
// /metrics (core/metrics/http-endpoint.ts). What is measured follows the service's work: tokens and trajectory steps
// streamed, calls and sequences in flight, batch sizes, queue wait, ONNX Runtime time per
// model, time to first step, the active adapter, and errors by status code.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { SchedulerLoad, SchedulerObserver } from "./engine/scheduler.ts";

const PREFIX = "lightreasoner_inference_";

/** Label value of the base expert on the adapter gauge (the contract's empty version). */
export const BASE_VERSION_LABEL = "base";

export class InferenceMetrics {
  readonly registry = new Registry();
  /** Generated tokens handed to the transport, by mode (trajectory, expert, amateur, contrastive). */
  readonly tokensStreamed = new Counter({ name: `${PREFIX}tokens_streamed_total`, help: "Generated tokens sent to clients, by mode", labelNames: ["mode"], registers: [this.registry] });
  /** Trajectory steps sent, by distribution encoding. */
  readonly stepsStreamed = new Counter({ name: `${PREFIX}trajectory_steps_streamed_total`, help: "Trajectory steps sent to clients, by distribution encoding", labelNames: ["encoding"], registers: [this.registry] });
  readonly activeStreams = new Gauge({ name: `${PREFIX}active_streams`, help: "Calls currently running the models (StreamTrajectories, Generate, Score)", registers: [this.registry] });
  readonly sequences: Gauge<"state">;
  readonly batchSize = new Histogram({ name: `${PREFIX}batch_size`, help: "Sequences per batched forward pass, by model", labelNames: ["model"], buckets: [1, 2, 4, 8, 16, 32, 64, 128], registers: [this.registry] });
  readonly onnxRunSeconds = new Histogram({ name: `${PREFIX}onnx_run_seconds`, help: "ONNX Runtime time per batched forward pass, by model", labelNames: ["model"], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [this.registry] });
  readonly queueWaitSeconds = new Histogram({ name: `${PREFIX}queue_wait_seconds`, help: "Time a sequence waited for a batch slot", buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30], registers: [this.registry] });
  readonly timeToFirstStepSeconds = new Histogram({ name: `${PREFIX}time_to_first_step_seconds`, help: "Time from a sequence's arrival to its first generated token", buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [this.registry] });
  readonly sequencesFinished = new Counter({ name: `${PREFIX}sequences_finished_total`, help: "Sequences finished, by finish reason", labelNames: ["reason"], registers: [this.registry] });
  readonly adapterVersion = new Gauge({ name: `${PREFIX}adapter_version`, help: `The adapter new requests use (value 1 on its version label; "${BASE_VERSION_LABEL}" is the base expert)`, labelNames: ["version"], registers: [this.registry] });
  readonly requests = new Counter({ name: `${PREFIX}requests_total`, help: "Finished calls, by method and status code", labelNames: ["method", "code"], registers: [this.registry] });
  readonly errors = new Counter({ name: `${PREFIX}errors_total`, help: "Failed calls and failed trajectories inside calls, by status code", labelNames: ["code"], registers: [this.registry] });

  constructor(load: () => SchedulerLoad) {
    collectDefaultMetrics({ register: this.registry });
    // Read at scrape time, so the gauge can never drift from the scheduler's own count.
    this.sequences = new Gauge({
      name: `${PREFIX}sequences`,
      help: "Sequences in the scheduler: running (holding a batch slot), paused (reader behind), waiting (queued)",
      labelNames: ["state"],
      registers: [this.registry],
      collect() {
        const { running, paused, waiting } = load();
        this.set({ state: "running" }, running);
        this.set({ state: "paused" }, paused);
        this.set({ state: "waiting" }, waiting);
      },
    });
    this.setAdapterVersion("");
  }

  setAdapterVersion(version: string): void {
    this.adapterVersion.reset();
    this.adapterVersion.set({ version: version || BASE_VERSION_LABEL }, 1);
  }

  /** The scheduler's hooks, feeding the batch, runtime, queue and first-step histograms. */
  observer(): SchedulerObserver {
    return {
      batchRan: (model, size, seconds) => {
        this.batchSize.observe({ model }, size);
        this.onnxRunSeconds.observe({ model }, seconds);
      },
      sequenceAdmitted: (seconds) => this.queueWaitSeconds.observe(seconds),
      firstStep: (seconds) => this.timeToFirstStepSeconds.observe(seconds),
      sequenceFinished: (reason) => this.sequencesFinished.inc({ reason }),
    };
  }
}
