// One run, stage by stage: evaluate the expert it starts from (the base, or the final adapter
// of the run it continues: a further round of the method), sample trajectories and keep the
// selected steps (or, for SFT, the right trajectories), train LoRA on them (after sampling,
// or overlapping with it in online mode, pushing new adapters as it goes), push the final
// adapter to every replica and evaluate it. Every request names its adapter (the base expert,
// or a version this run pushed) and pushes upload without activating, so runs sharing
// replicas never see each other's adapters; only a run that asks activates its final adapter,
// at the very end. Every stage can be entered again: evaluations
// done are kept in the run record, the sample store skips stored problems, training resumes
// from its latest checkpoint. So a run that failed or was cancelled resumes where it stopped
// without losing or repeating work.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { readPeftAdapter, writePeftAdapter } from "#core/formats/peft.ts";
import { TextTokenizer } from "#core/formats/tokenizer.ts";
import type { ClientSecurity } from "#core/grpc/adapter.ts";
import type { ModelConfig } from "#core/model/config.ts";
import type { LoraAdapter } from "#core/model/lora.ts";
import type { WeightMap } from "#core/model/weights.ts";
import type { Problem } from "#core/tasks/problems.ts";
import { evaluate, evaluationKey } from "#trainer/eval/evaluate.ts";
import type { TrainerMetrics } from "#trainer/metrics.ts";
import { resolveSamplerConfig, storeSettings } from "#trainer/sampling/config.ts";
import type { SamplerConfig } from "#trainer/sampling/config.ts";
import { EndpointPool } from "#trainer/sampling/endpoint-pool.ts";
import { restoreOncePerReplica } from "#trainer/sampling/pinned-adapter.ts";
import { sampleProblems } from "#trainer/sampling/sampler.ts";
import type { SamplingEvent } from "#trainer/sampling/sampler.ts";
import { importPaperSamples, readPaperSamples } from "#trainer/store/paper-format.ts";
import { trainingSet, unitOf } from "#trainer/store/training-set.ts";
import type { TrainingTrajectory } from "#trainer/store/records.ts";
import { SampleStore } from "#trainer/store/sample-store.ts";
import type { TrajectorySource } from "#trainer/training/batching.ts";
import type { EngineChoice } from "#trainer/training/gradient-engine.ts";
import { trainLora } from "#trainer/training/lora-trainer.ts";
import { sftObjective } from "#trainer/training/sft.ts";
import type { StepEvent } from "#trainer/training/training-loop.ts";
import { activateOnReplicas, pushToReplicas } from "./endpoint-adapters.ts";
import { RunConfigError, RunStateError } from "./errors.ts";
import { loadProblemSource } from "./problem-source.ts";
import type { RunPlan } from "./run-config.ts";
import type { EvaluationRecord, RunRecord, RunStageName } from "./run-record.ts";
import { evaluationMessage } from "./run-record.ts";
import { TrajectoryFeed } from "./trajectory-feed.ts";

/** The trainer's frozen expert, loaded once and shared by its runs. */
export interface ExpertModel {
  dir: string;
  name: string;
  fingerprint: string;
  config: ModelConfig;
  weights: WeightMap;
}

export interface RunServices {
  expert: ExpertModel;
  /** The LoRA gradient engine every run trains with (chosen once per trainer, reported in each run), and why. */
  trainingEngine: EngineChoice;
  metrics: TrainerMetrics;
  log: (message: string) => void;
  /** How long StartRun waits for an endpoint to answer. */
  connectTimeoutMs?: number;
  /** TLS and the token for the inference endpoints (default: plain text, no token). */
  inferenceSecurity?: ClientSecurity;
  /** An evaluation another run of this trainer already made with this key (evaluationKey), and which run made it. */
  findEvaluation?: (key: string) => { runId: string; evaluation: EvaluationRecord } | undefined;
}

/** What a run's events look like to the run manager (the contract's WatchRunResponse.event). */
export type RunEvent =
  | { case: "trainingStep"; value: { step: number; loss: number; learningRate: number; samples: number; tunedTokens: number } }
  | { case: "adapterPushed"; value: { version: string; optimizerStep: number; endpoints: string[]; directory: string } }
  | { case: "evaluation"; value: ReturnType<typeof evaluationMessage> }
  | { case: "warning"; value: { message: string } };

/** The run manager's side of a running run. */
export interface RunHandle {
  readonly record: RunRecord;
  readonly runDir: string;
  /** Enters a stage: closes the previous stage's clock, tells watchers, saves the record. */
  enter(stage: RunStageName): void;
  /** Counters changed: watchers get a (rate-limited) progress event; the record is saved now and then. */
  progressed(): void;
  emit(event: RunEvent): void;
  save(): void;
}

/** Where a run continues from (RunConfig.start_from_run): another run's final adapter. */
export interface StartingAdapter {
  runId: string;
  version: string;
  directory: string;
}

/** Everything checked before a run starts: the answer to StartRun depends on it. */
export interface PreparedRun {
  plan: RunPlan;
  /** Null: the run starts from the base expert. */
  startFrom: StartingAdapter | null;
  pool: EndpointPool;
  sampler: SamplerConfig;
  problems: Problem[];
  evalProblems: Problem[];
}

export const SAMPLES_FILE = "samples.jsonl";
const CHECKPOINTS_DIR = "checkpoints";
const ADAPTERS_DIR = "adapters";

/** Reads the problems and checks the endpoints serve the trainer's expert; closes what it opened on error. */
export async function prepareRun(plan: RunPlan, services: RunServices, startFrom: StartingAdapter | null = null): Promise<PreparedRun> {
  const problems = plan.problems ? loadProblemSource(plan.problems, "problems") : [];
  const evalProblems = plan.evalProblems ? loadProblemSource(plan.evalProblems, "eval_problems") : [];
  if (plan.importSamplesPath && !existsSync(plan.importSamplesPath)) throw new RunConfigError("import_samples_path", `no file at ${plan.importSamplesPath}`);
  const pool = await EndpointPool.connect({ targets: plan.endpoints, expertFingerprint: services.expert.fingerprint, expertDir: services.expert.dir, connectTimeoutMs: services.connectTimeoutMs, security: services.inferenceSecurity });
  try {
    const sampler = resolveSamplerConfig(plan.sampler, pool.served);
    return { plan, startFrom, pool, sampler, problems, evalProblems };
  } catch (err) {
    pool.close();
    throw err;
  }
}

/** Runs every stage not yet done. Returns when done or when `signal` stops it; throws on failure. */
export async function executeRun(run: RunHandle, prepared: PreparedRun, services: RunServices, signal: AbortSignal): Promise<void> {
  return new RunExecution(run, prepared, services, signal).execute();
}

class RunExecution {
  private readonly plan: RunPlan;
  private readonly record: RunRecord;
  private samplingSeconds = 0;
  private samplingStepsThisSession = 0;
  /** The weights of the adapter the run continues from, read once when it is uploaded; training starts from them. */
  private startWeights: LoraAdapter | undefined;
  /** Uploads a version the run names again to a replica that lost it, once at a time however many requests found it gone. */
  private readonly restoreAdapter = restoreOncePerReplica((version, address) => this.uploadAgain(version, address));

  constructor(
    private readonly run: RunHandle,
    private readonly prepared: PreparedRun,
    private readonly services: RunServices,
    private readonly signal: AbortSignal,
  ) {
    this.plan = prepared.plan;
    this.record = run.record;
  }

  async execute(): Promise<void> {
    const { plan, record } = this;
    this.run.enter("preparing");
    record.counters.problemsTotal = this.prepared.problems.length;
    record.counters.optimizerStepsTotal = plan.training.maxSteps;
    await this.reloadRunAdapter();
    if (this.stopped()) return;

    if (plan.evalProblems && !this.evaluation("evaluating_before")) {
      this.run.enter("evaluating_before");
      await this.evaluate("evaluating_before");
      if (this.stopped()) return;
    }

    if (!record.trainingDone) {
      const store = SampleStore.open(join(this.run.runDir, SAMPLES_FILE), { settings: this.storeSettings() });
      try {
        this.countStore(store);
        if (plan.importSamplesPath) this.importSamples(store);
        if (plan.mode === "online") {
          this.run.enter("sampling_and_training");
          await this.sampleAndTrain(store);
        } else {
          if (this.prepared.problems.length > 0) {
            this.run.enter("sampling");
            await this.sample(store);
            if (this.stopped()) return;
          }
          this.run.enter("training");
          await this.train(this.storedTrajectories(store));
        }
      } finally {
        store.close();
      }
      if (this.stopped()) return;
    }

    if (plan.evalProblems && !this.evaluation("evaluating_after")) {
      this.run.enter("evaluating_after");
      await this.evaluate("evaluating_after");
      if (this.stopped()) return;
    }
    const final = this.record.adapters.at(-1);
    if (plan.activateFinalAdapter && final) {
      await activateOnReplicas(this.prepared.pool, final.version, (m) => this.warn(m), this.restoreAdapter);
      this.services.log(`adapter ${final.version} is now active on ${final.endpoints.join(", ")} (activate_final_adapter)`);
    }
    this.run.enter("done");
  }

  private stopped(): boolean {
    return this.signal.aborted;
  }

  /** The version the run starts from: "" (the base expert), or the adapter of the run it continues. */
  private startVersion(): string {
    return this.prepared.startFrom?.version ?? "";
  }

  /** The version the run's requests name once it has pushed one (until then, where it started). */
  private latestVersion(): string {
    return this.record.adapters.at(-1)?.version ?? this.startVersion();
  }

  /**
   * Uploads the adapters the run's requests will name: the one it continues from, and a
   * resumed run's latest (the replicas may have restarted or evicted either since).
   */
  private async reloadRunAdapter(): Promise<void> {
    const start = this.prepared.startFrom;
    if (start) this.startWeights = await this.upload(start.directory, start.version);
    const latest = this.record.adapters.at(-1);
    if (latest) await this.upload(latest.directory, latest.version);
  }

  /** Reads the adapter in `directory` and uploads it to `addresses` (default every replica), checking it is still `expectedVersion`. */
  private async upload(directory: string, expectedVersion: string, addresses?: string[]): Promise<LoraAdapter> {
    const adapter = readPeftAdapter(directory, this.services.expert.config);
    const { version } = await pushToReplicas(this.prepared.pool, adapter, this.services.expert.name, (m) => this.warn(m), addresses);
    if (version !== expectedVersion) throw new RunStateError(`the adapter in ${directory} now has version ${version}, but it was pushed as ${expectedVersion}; the directory was changed`);
    return adapter;
  }

  /** A version the run's requests name, read back from the run's own folders and uploaded again to the replica at `address`. */
  private async uploadAgain(version: string, address: string): Promise<void> {
    const start = this.prepared.startFrom;
    const directory = start?.version === version ? start.directory : this.record.adapters.find((a) => a.version === version)?.directory;
    if (!directory) throw new RunStateError(`the run has no adapter ${version} to upload again`);
    this.warn(`${address} no longer holds adapter ${version} (evicted, or the replica restarted); uploading it again`);
    await this.upload(directory, version, [address]);
  }

  private evaluation(stage: EvaluationRecord["stage"]): EvaluationRecord | undefined {
    return this.record.evaluations.find((e) => e.stage === stage);
  }

  private async evaluate(stage: EvaluationRecord["stage"]): Promise<void> {
    const { maxNewTokens, systemPrompt, stopStrings } = this.prepared.sampler;
    // Before training: where the run starts; after: the run's own final adapter, whatever is active.
    const adapter = stage === "evaluating_before" ? this.startVersion() : this.latestVersion();
    const key = evaluationKey({ expertFingerprint: this.services.expert.fingerprint, adapter, problems: this.prepared.evalProblems, maxNewTokens, systemPrompt, stopStrings });
    const earlier = this.services.findEvaluation?.(key);
    if (earlier) {
      // Greedy answers of the same weights to the same prompts: measuring again (a 5,000-problem
      // evaluation is most of a round's time) would give the same verdicts.
      const { evaluation } = earlier;
      this.record.evaluations.push({ ...evaluation, stage, wallSeconds: 0, key, reusedFromRun: earlier.runId });
      this.run.emit({ case: "evaluation", value: evaluationMessage(this.record.evaluations.at(-1)!) });
      this.run.save();
      return;
    }
    const result = await evaluate({ pool: this.prepared.pool, problems: this.prepared.evalProblems, mode: "expert", adapter, restoreAdapter: this.restoreAdapter, maxNewTokens, systemPrompt, stopStrings, signal: this.signal });
    if (this.stopped()) return;
    const evaluation: EvaluationRecord = {
      stage,
      adapterVersion: result.adapterVersions.join(","),
      problems: result.problems,
      correct: result.correct,
      accuracy: result.accuracy,
      wallSeconds: result.wallSeconds,
      verdicts: result.perProblem,
      // An answer from another adapter than asked (a push mid-way) makes it no measurement of `adapter`.
      ...(result.adapterVersions.length === 1 && result.adapterVersions[0] === adapter ? { key } : {}),
    };
    this.record.evaluations.push(evaluation);
    this.run.emit({ case: "evaluation", value: evaluationMessage(evaluation) });
    this.run.save();
  }

  private storeSettings(): Record<string, unknown> {
    const { served } = this.prepared.pool;
    const settings = storeSettings(this.prepared.sampler, served.expertFingerprint, served.amateurFingerprint);
    const start = this.prepared.startFrom;
    return { ...settings, ...(start ? { startAdapter: start.version } : {}), ...(this.plan.importSamplesPath ? { importedFrom: this.plan.importSamplesPath } : {}) };
  }

  /** Imports the reference-format file into the run's store once (a resumed run finds it there). */
  private importSamples(store: SampleStore): void {
    if (store.all().length > 0) return;
    const tokenizer = TextTokenizer.load(this.services.expert.dir);
    const file = this.plan.importSamplesPath;
    const imported = importPaperSamples(readPaperSamples(file), { tokenizer, systemPrompt: this.prepared.sampler.systemPrompt, file });
    for (const record of imported.records) store.append(record);
    if (imported.driftedSamples > 0) this.warn(`${imported.driftedSamples} of ${imported.samples} imported samples re-encode to a prefix of another length than their step`);
    this.countStore(store);
  }

  private countStore(store: SampleStore): void {
    const c = store.counts();
    const counters = this.record.counters;
    counters.problemsSampled = c.problems;
    counters.stepsSeen = c.stepsSeen;
    const sft = this.plan.method === "sft";
    counters.stepsSelected = sft ? c.sftTokens : c.stepsSelected;
    counters.samplesStored = sft ? c.correct : c.stepsSelected;
    this.services.metrics.selectionRatio.set({ run: this.record.runId }, c.stepsSeen > 0 ? counters.stepsSelected / c.stepsSeen : 0);
  }

  private async sample(store: SampleStore, signal = this.signal): Promise<void> {
    const started = performance.now();
    try {
      const summary = await sampleProblems({
        pool: this.prepared.pool,
        store,
        problems: this.prepared.problems,
        config: this.prepared.sampler,
        signal,
        pinAdapter: this.plan.samplingAdapter === "latest_pushed" ? () => this.latestVersion() : () => this.startVersion(),
        restoreAdapter: this.restoreAdapter,
        onEvent: (event) => this.onSamplingEvent(store, event, (performance.now() - started) / 1000),
      });
      this.countStore(store);
      if (summary.retries > 0) this.services.log(`sampling retried ${summary.retries} trajectories on other endpoints`);
    } finally {
      this.samplingSeconds += (performance.now() - started) / 1000;
    }
  }

  private onSamplingEvent(store: SampleStore, event: SamplingEvent, secondsThisCall: number): void {
    const { metrics } = this.services;
    if (event.type === "problem") {
      const selectedBefore = this.record.counters.stepsSelected;
      this.countStore(store);
      metrics.problemsSampled.inc();
      metrics.stepsSeen.inc(event.stepsSeen);
      metrics.stepsSelected.inc(this.record.counters.stepsSelected - selectedBefore);
      for (const kl of event.kls) metrics.stepKl.observe(kl);
      metrics.progressed(this.record.runId);
      this.samplingStepsThisSession += event.stepsSeen;
      const seconds = this.samplingSeconds + secondsThisCall;
      this.record.counters.stepsPerSecond = seconds > 0 ? this.samplingStepsThisSession / seconds : 0;
      this.run.progressed();
    } else if (event.type === "retry") {
      this.warn(`problem ${event.problemId} is written again elsewhere: ${event.reason} (on ${event.lane})`);
    } else {
      this.warn(`endpoint ${event.lane} is out of rotation for ${Math.round(event.untilMs)} ms: ${event.reason}`);
    }
  }

  private storedTrajectories(store: SampleStore): TrainingTrajectory[] {
    const trajectories = trainingSet(store.all(), this.plan.method);
    if (trajectories.length === 0) throw this.nothingToTrain();
    return trajectories;
  }

  private nothingToTrain(): RunConfigError {
    return this.plan.method === "sft"
      ? new RunConfigError("problems", "no sampled trajectory reached the right answer, so SFT has nothing to train on (raise sft.attempts_per_problem or sample more problems)")
      : new RunConfigError("selection.beta", `no step had KL above beta = ${this.prepared.sampler.beta}, so there is nothing to train on (lower beta or sample more problems)`);
  }

  /** Online mode: training reads trajectories as sampling stores them, in problem order; sampling stops when training is done. */
  private async sampleAndTrain(store: SampleStore): Promise<void> {
    const order = this.prepared.problems.map((p) => p.id);
    const feed = new TrajectoryFeed(store, unitOf(this.plan.method), this.plan.training.seed, order);
    const stopSampling = new AbortController();
    const stop = () => stopSampling.abort();
    this.signal.addEventListener("abort", stop);
    const sampling = this.sample(store, stopSampling.signal).then(
      () => feed.finishSampling(),
      (err: Error) => {
        feed.fail(err);
        throw err;
      },
    );
    // Training learns of a sampling failure through the feed and the failure is awaited
    // below; until then the rejection must not count as unhandled (Node would end the process).
    sampling.catch(() => undefined);
    try {
      await this.train(feed);
    } catch (err) {
      stopSampling.abort();
      await sampling.catch(() => undefined);
      throw err;
    } finally {
      this.signal.removeEventListener("abort", stop);
    }
    // Training reached its last step: problems not yet sampled are not needed.
    stopSampling.abort();
    await sampling;
    if (feed.size === 0 && !this.stopped()) throw this.nothingToTrain();
  }

  private async train(trajectories: TrajectorySource): Promise<void> {
    const { expert, metrics } = this.services;
    const { training } = this.plan;
    const online = this.plan.mode === "online";
    const result = await trainLora({
      expert: { config: expert.config, weights: expert.weights, source: expert.dir },
      trajectories,
      // Offline runs push once, at the end; online runs every push_every_steps.
      config: { ...training, pushEverySteps: online ? training.pushEverySteps : 0 },
      engine: this.services.trainingEngine,
      initialAdapter: this.startWeights,
      objective: this.plan.method === "sft" ? sftObjective : undefined,
      checkpointDir: join(this.run.runDir, CHECKPOINTS_DIR),
      baseModelName: expert.name,
      signal: this.signal,
      onStep: (event) => this.onTrainingStep(event),
      onAdapter: (adapter, step) => this.publish(adapter, step),
      log: (line) => this.services.log(line),
    });
    if (result.stoppedBy === "aborted") return;
    if (result.progress.step === 0) throw this.nothingToTrain();
    // A resumed run whose training had already finished gets no onAdapter call.
    await this.publish(result.adapter, result.progress.step);
    this.record.trainingDone = true;
    metrics.progressed(this.record.runId);
    this.run.save();
  }

  private onTrainingStep(event: StepEvent): void {
    const { metrics } = this.services;
    const counters = this.record.counters;
    counters.optimizerSteps = event.step;
    counters.tunedTokens = event.totals.tunedTokens;
    counters.lastLoss = event.loss;
    this.record.losses.push({ step: event.step, loss: event.loss });
    metrics.optimizerSteps.inc();
    const labels = { run: this.record.runId };
    metrics.loss.set(labels, event.loss);
    metrics.samplesPerSecond.set(labels, event.samplesPerSecond);
    metrics.progressed(this.record.runId);
    this.run.emit({ case: "trainingStep", value: { step: event.step, loss: event.loss, learningRate: event.learningRate, samples: event.samples, tunedTokens: event.tunedTokens } });
    this.run.progressed();
  }

  /** Saves the adapter under the run and uploads it to every replica (once per optimizer step). */
  private async publish(adapter: LoraAdapter, step: number): Promise<void> {
    if (this.record.adapters.at(-1)?.optimizerStep === step) return;
    const directory = join(this.run.runDir, ADAPTERS_DIR, `step-${String(step).padStart(6, "0")}`);
    writePeftAdapter(directory, adapter, { baseModel: this.services.expert.name });
    const { version, endpoints } = await pushToReplicas(this.prepared.pool, adapter, this.services.expert.name, (m) => this.warn(m));
    this.record.adapters.push({ version, optimizerStep: step, endpoints, directory });
    this.record.liveAdapterVersion = version;
    this.record.counters.adaptersPushed = this.record.adapters.length;
    this.services.metrics.adaptersPushed.inc();
    this.run.emit({ case: "adapterPushed", value: { version, optimizerStep: step, endpoints, directory } });
    this.run.save();
  }

  private warn(message: string): void {
    this.services.log(message);
    this.run.emit({ case: "warning", value: { message } });
  }
}
