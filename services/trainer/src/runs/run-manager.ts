// The trainer's runs: started from a validated configuration, executed in the background,
// several at once up to a bound (runs pin the adapter of every request they send, so runs
// sharing replicas do not see each other's adapters; they share the trainer's one copy of the
// frozen expert weights, and each adds its own training memory, which is what the bound
// limits), watched, listed, cancelled and resumed. A StartRun or ResumeRun beyond the bound is
// refused with RESOURCE_EXHAUSTED rather than queued: a queued run would hold no resources but
// would start at a time its caller did not choose. Each lives in a directory
// of its own under the runs directory, so the list survives a restart of the trainer; a run
// that was running when the trainer stopped is reported FAILED and can be resumed.
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Run, RunConfig } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import { RunState } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import { GrpcError, Status, toGrpcStatus } from "#core/grpc/adapter.ts";
import { RunCapacityError, RunConfigError, RunExistsError, RunNotFoundError, RunStateError } from "./errors.ts";
import { executeRun, prepareRun } from "./run-execution.ts";
import type { PreparedRun, RunEvent, RunHandle, RunServices, StartingAdapter } from "./run-execution.ts";
import type { RunConfigDefaults, RunPlan } from "./run-config.ts";
import { resolvedRunConfig, resolveRunPlan, RUN_ID } from "./run-config.ts";
import { STAGE_OF, STATE_OF, newRunRecord, readRunRecord, runConfigOf, runMessage, writeRunRecord, RUN_FILE } from "./run-record.ts";
import type { EvaluationRecord, RunRecord, RunStageName, RunStateName } from "./run-record.ts";

/** An event as watchers receive it: the contract's WatchRunResponse.event. */
export type WatchEvent =
  | RunEvent
  | { case: "snapshot"; value: Run }
  | { case: "stageChanged"; value: { previous: number; current: number } }
  | { case: "progress"; value: RunRecord["counters"] }
  | { case: "finished"; value: Run };

export interface RunManagerOptions extends RunServices {
  runsDir: string;
  /** Endpoints used by configs that name none. */
  defaultEndpoints: readonly string[];
  /** Further endpoints a config may name (a config naming any other is refused). */
  allowedEndpoints?: readonly string[];
  /** The tfjs backend the trainer's process runs on (reported in every run). */
  tfjsBackend: string;
  /** Most runs running at once (default DEFAULT_MAX_CONCURRENT_RUNS). */
  maxConcurrentRuns?: number;
}

/**
 * Runs at once by default: each adds its training memory (for the 0.5B-shaped expert about
 * 1.4 GB of activations at the engine's default token budget) beside the one shared copy of
 * the expert, so two fit a machine that holds the inference service as well.
 */
export const DEFAULT_MAX_CONCURRENT_RUNS = 2;

/** Watchers get counters at most this often; run.json is rewritten at most this often while counting. */
const PROGRESS_EVERY_MS = 250;
const SAVE_EVERY_MS = 2000;

class ManagedRun implements RunHandle {
  private readonly listeners = new Set<(event: WatchEvent) => void>();
  private stageStartedAt = performance.now();
  private lastProgressAt = 0;
  private lastSaveAt = 0;
  controller: AbortController | null = null;
  done: Promise<void> | null = null;

  constructor(
    readonly record: RunRecord,
    readonly runDir: string,
  ) {}

  get active(): boolean {
    return this.record.state === "pending" || this.record.state === "running";
  }

  enter(stage: RunStageName): void {
    const previous = this.record.stage;
    this.closeStageClock();
    this.record.stage = stage;
    if (previous !== stage) this.emit({ case: "stageChanged", value: { previous: STAGE_OF[previous], current: STAGE_OF[stage] } });
    this.save();
  }

  /** Starts timing the current stage from now (a resumed run was not working while stopped). */
  restartStageClock(): void {
    this.stageStartedAt = performance.now();
  }

  /** Adds the time since the stage was entered to its total. */
  closeStageClock(): void {
    const now = performance.now();
    const stage = this.record.stage;
    if (stage !== "unspecified" && stage !== "done" && this.active) {
      this.record.stageSeconds[stage] = (this.record.stageSeconds[stage] ?? 0) + (now - this.stageStartedAt) / 1000;
    }
    this.stageStartedAt = now;
  }

  progressed(): void {
    const now = performance.now();
    if (now - this.lastProgressAt >= PROGRESS_EVERY_MS) {
      this.lastProgressAt = now;
      this.emit({ case: "progress", value: { ...this.record.counters } });
    }
    if (now - this.lastSaveAt >= SAVE_EVERY_MS) this.save();
  }

  emit(event: WatchEvent): void {
    for (const listener of this.listeners) listener(event);
  }

  save(): void {
    this.lastSaveAt = performance.now();
    this.record.updatedAt = new Date().toISOString();
    writeRunRecord(this.runDir, this.record);
  }

  message(): Run {
    return runMessage(this.record, this.runDir);
  }

  subscribe(listener: (event: WatchEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

export class RunManager {
  private readonly runs = new Map<string, ManagedRun>();
  /** Runs whose StartRun/ResumeRun is preparing: they count against the bound before they run. */
  private readonly reserved = new Set<string>();
  private closed = false;
  private readonly maxConcurrentRuns: number;

  private constructor(private readonly options: RunManagerOptions) {
    this.maxConcurrentRuns = options.maxConcurrentRuns ?? DEFAULT_MAX_CONCURRENT_RUNS;
    if (!Number.isInteger(this.maxConcurrentRuns) || this.maxConcurrentRuns < 1) throw new RangeError(`maxConcurrentRuns must be an integer >= 1, got ${this.maxConcurrentRuns}`);
  }

  /** Loads every run under runsDir; runs the previous trainer left running become FAILED (resumable). */
  static open(options: RunManagerOptions): RunManager {
    const manager = new RunManager({ ...options, runsDir: resolve(options.runsDir) });
    const { runsDir } = manager.options;
    mkdirSync(runsDir, { recursive: true });
    for (const entry of readdirSync(runsDir, { withFileTypes: true })) {
      if (!entry.isDirectory() || !existsSync(join(runsDir, entry.name, RUN_FILE))) continue;
      const runDir = join(runsDir, entry.name);
      const run = new ManagedRun(readRunRecord(runDir), runDir);
      if (run.active) {
        run.record.state = "failed";
        run.record.error = "the trainer stopped while this run was running; ResumeRun continues it";
        run.save();
      }
      manager.runs.set(run.record.runId, run);
    }
    return manager;
  }

  private endpointDefaults(): RunConfigDefaults {
    return { endpoints: this.options.defaultEndpoints, allowedEndpoints: this.options.allowedEndpoints };
  }

  counts(): Record<RunStateName, number> {
    const counts: Record<RunStateName, number> = { pending: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 };
    for (const run of this.runs.values()) counts[run.record.state]++;
    return counts;
  }

  /** Validates everything StartRun promises to check, then starts the run in the background. */
  async start(config: RunConfig | undefined, requestedId: string, validateOnly: boolean): Promise<Run> {
    const runId = requestedId === "" ? newRunId() : requestedId;
    if (!RUN_ID.test(runId) || runId === "." || runId === "..") throw new RunConfigError("run_id", `must be 1 to 64 characters of [A-Za-z0-9._-], got ${JSON.stringify(requestedId)}`);
    if (this.runs.has(runId) || this.reserved.has(runId) || existsSync(join(this.options.runsDir, runId))) throw new RunExistsError(runId);
    const plan = resolveRunPlan(config, this.endpointDefaults());
    const startFrom = this.startingAdapter(plan);
    return this.reserve(runId, validateOnly, async () => {
      const prepared = await prepareRun(plan, this.options, startFrom);
      const record = newRunRecord(runId, resolvedRunConfig(plan), this.options.expert.fingerprint);
      record.tfjsBackend = this.options.tfjsBackend;
      record.trainingEngine = this.options.trainingEngine.kind;
      const runDir = join(this.options.runsDir, runId);
      if (validateOnly) {
        prepared.pool.close();
        return runMessage(record, runDir);
      }
      const run = new ManagedRun(record, runDir);
      this.runs.set(runId, run);
      this.launch(run, prepared);
      return run.message();
    });
  }

  /** Continues a FAILED or CANCELLED run with its stored configuration. */
  async resume(runId: string): Promise<Run> {
    const run = this.find(runId);
    if (run.record.state !== "failed" && run.record.state !== "cancelled") {
      throw new RunStateError(`run ${runId} is ${run.record.state.toUpperCase()}; only FAILED or CANCELLED runs can be resumed`);
    }
    const plan = resolveRunPlan(runConfigOf(run.record), this.endpointDefaults());
    const startFrom = this.startingAdapter(plan);
    return this.reserve(runId, false, async () => {
      const prepared = await prepareRun(plan, this.options, startFrom);
      run.record.error = "";
      this.launch(run, prepared);
      return run.message();
    });
  }

  get(runId: string): Run {
    return this.find(runId).message();
  }

  /** Newest first; `state` UNSPECIFIED lists all. */
  list(state: RunState = RunState.UNSPECIFIED): Run[] {
    return [...this.runs.values()]
      .filter((run) => state === RunState.UNSPECIFIED || STATE_OF[run.record.state] === state)
      .sort((a, b) => b.record.createdAt.localeCompare(a.record.createdAt) || b.record.runId.localeCompare(a.record.runId))
      .map((run) => run.message());
  }

  /** Stops a run and waits until it has written what it had; a run that is over is returned as is. */
  async cancel(runId: string): Promise<Run> {
    const run = this.find(runId);
    if (run.active) {
      run.controller?.abort();
      await run.done;
    }
    return run.message();
  }

  /** A snapshot, then the run's events until it finishes (at once for a run that is over). */
  async *watch(runId: string, signal: AbortSignal): AsyncGenerator<WatchEvent> {
    const run = this.find(runId);
    const queue: WatchEvent[] = [];
    let wakeUp: (() => void) | null = null;
    const unsubscribe = run.subscribe((event) => {
      queue.push(event);
      wakeUp?.();
    });
    const onAbort = () => wakeUp?.();
    signal.addEventListener("abort", onAbort);
    try {
      yield { case: "snapshot", value: run.message() };
      if (!run.active) {
        yield finishedEvent(run);
        return;
      }
      while (!signal.aborted) {
        const event = queue.shift();
        if (event === undefined) {
          await new Promise<void>((resolve) => (wakeUp = resolve));
          wakeUp = null;
          continue;
        }
        yield event;
        if (event.case === "finished") return;
      }
    } finally {
      unsubscribe();
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** Cancels every running run (each stays resumable) and waits for them to stop. */
  async close(): Promise<void> {
    this.closed = true;
    const active = [...this.runs.values()].filter((run) => run.active);
    for (const run of active) run.controller?.abort();
    await Promise.all(active.map((run) => run.done));
  }

  /**
   * The adapter start_from_run names: the final one of a SUCCEEDED run of this trainer, on
   * the expert it holds now, with the LoRA shape the new run asks for (training goes on from
   * those weights, so rank, alpha and the target modules must be the same).
   */
  private startingAdapter(plan: RunPlan): StartingAdapter | null {
    const id = plan.startFromRun;
    if (id === "") return null;
    const from = this.runs.get(id);
    if (!from) throw new GrpcError(Status.NOT_FOUND, `start_from_run: no run with id ${JSON.stringify(id)} on this trainer`, "start_from_run");
    if (from.record.state !== "succeeded") throw new RunStateError(`start_from_run: run ${id} is ${from.record.state.toUpperCase()}; a run continues only from a SUCCEEDED one`);
    const final = from.record.adapters.at(-1);
    if (!final) throw new RunStateError(`start_from_run: run ${id} pushed no adapter`);
    if (from.record.expertFingerprint !== this.options.expert.fingerprint) {
      throw new RunStateError(`start_from_run: run ${id} trained expert ${from.record.expertFingerprint}, but this trainer holds ${this.options.expert.fingerprint}`);
    }
    const theirs = runConfigOf(from.record).lora!;
    const ours = plan.training.lora;
    const shape = (rank: number, alpha: number, modules: readonly string[]) => `rank ${rank}, alpha ${alpha}, target_modules ${modules.join(",")}`;
    if (theirs.rank !== ours.rank || theirs.alpha !== ours.alpha || theirs.targetModules.join(",") !== ours.targetModules.join(",")) {
      throw new RunConfigError("lora", `must have the shape of run ${id}'s adapter (${shape(theirs.rank!, theirs.alpha!, theirs.targetModules)}), got ${shape(ours.rank, ours.alpha, ours.targetModules)}`);
    }
    return { runId: id, version: final.version, directory: final.directory };
  }

  /** An evaluation with this key that some run of this trainer made (not copied) itself. */
  private findEvaluation(key: string): { runId: string; evaluation: EvaluationRecord } | undefined {
    for (const run of this.runs.values()) {
      const evaluation = run.record.evaluations.find((e) => e.key === key && !e.reusedFromRun);
      if (evaluation) return { runId: run.record.runId, evaluation };
    }
    return undefined;
  }

  private find(runId: string): ManagedRun {
    const run = this.runs.get(runId);
    if (!run) throw new RunNotFoundError(runId);
    return run;
  }

  private async reserve(runId: string, validateOnly: boolean, work: () => Promise<Run>): Promise<Run> {
    if (this.closed) throw new RunStateError("the trainer is shutting down");
    if (!validateOnly) {
      if (this.reserved.has(runId)) throw new RunStateError(`run ${runId} is being started already`);
      const busy = [...new Set([...this.reserved, ...[...this.runs.values()].filter((run) => run.active).map((run) => run.record.runId)])];
      if (busy.length >= this.maxConcurrentRuns) throw new RunCapacityError(busy, this.maxConcurrentRuns);
      this.reserved.add(runId);
    }
    try {
      return await work();
    } finally {
      if (!validateOnly) this.reserved.delete(runId);
    }
  }

  private launch(run: ManagedRun, prepared: PreparedRun): void {
    const controller = new AbortController();
    run.controller = controller;
    run.record.state = "running";
    run.restartStageClock();
    run.save();
    this.options.metrics.runStarted(run.record.runId);
    const log = (message: string) => this.options.log(`run ${run.record.runId}: ${message}`);
    run.done = (async () => {
      try {
        await executeRun(run, prepared, { ...this.options, log, findEvaluation: (key) => this.findEvaluation(key) }, controller.signal);
        run.closeStageClock();
        run.record.state = controller.signal.aborted ? "cancelled" : "succeeded";
      } catch (err) {
        run.closeStageClock();
        if (controller.signal.aborted) {
          run.record.state = "cancelled";
        } else {
          run.record.state = "failed";
          run.record.error = toGrpcStatus(err).message;
          log(`failed: ${run.record.error}`);
        }
      } finally {
        prepared.pool.close();
        run.controller = null;
        this.options.metrics.runStopped(run.record.runId);
        run.save();
        run.emit({ case: "progress", value: { ...run.record.counters } });
        run.emit(finishedEvent(run));
      }
    })();
  }
}

/** The last event: the run as it ended, the same message GetRun returns. */
function finishedEvent(run: ManagedRun): WatchEvent {
  return { case: "finished", value: run.message() };
}

/** run-<UTC date and time>-<random>: sorts by creation, never collides in practice. */
function newRunId(now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "").replace("T", "-");
  return `run-${stamp}-${randomBytes(3).toString("hex")}`;
}
