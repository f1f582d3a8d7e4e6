// Stage 1 over the inference endpoints: every problem not yet in the sample store becomes a
// trajectory written by the expert, streamed with both models' distributions over one
// long-lived StreamTrajectories call per lane (many problems in flight on each), and decided
// step by step (KL, beta filter, plausible set, contrastive soft label). A problem is stored
// once, when its whole trajectory has arrived; a trajectory cut short by a failing endpoint
// is thrown away and written again elsewhere with the same seed, so nothing is lost or
// counted twice, and the same run seed gives the same sample set however the work was spread
// or interrupted.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { DistributionEncoding, FinishReason, FloatDtype } from "#core/gen/lightreasoner/v1/common_pb.ts";
import type { DistributionRequestSchema } from "#core/gen/lightreasoner/v1/common_pb.ts";
import type { TrajectoryFinished, TrajectoryRequestSchema, TrajectoryStarted, TrajectoryStep } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { GrpcError, Status } from "#core/grpc/adapter.ts";
import type { Problem } from "#core/tasks/problems.ts";
import { stepLabel } from "#core/math/selection.ts";
import { checkAnswer } from "#trainer/eval/answer.ts";
import type { SampleStore, StoreCounts } from "#trainer/store/sample-store.ts";
import { STORE_FORMAT_VERSION } from "#trainer/store/records.ts";
import type { SelectedStep, StoredFinishReason, TrajectoryRecord } from "#trainer/store/records.ts";
import type { SamplerConfig } from "./config.ts";
import type { EndpointPool, Lane } from "./endpoint-pool.ts";
import { AdapterIgnoredError, EndpointsExhaustedError, RequestRefusedError } from "./errors.ts";
import { adapterSelection, lostPinnedAdapter, restoreFailed } from "./pinned-adapter.ts";
import type { RestoreAdapter } from "./pinned-adapter.ts";
import { chatPrompt } from "./prompt.ts";
import { problemSeed } from "./seeds.ts";
import { selectionOf } from "./step-selection.ts";
import { TrajectoryCall } from "./trajectory-call.ts";

export type SamplingEvent =
  /** A problem's trajectory is complete and stored. */
  | { type: "problem"; problemId: string; lane: string; stepsSeen: number; stepsSelected: number; kls: number[]; correct: boolean | null; attempts: number }
  /** A trajectory was cut short and its problem goes back in the queue. */
  | { type: "retry"; problemId: string; lane: string; reason: string }
  /** A lane was taken out of rotation for a while. */
  | { type: "lane-down"; lane: string; reason: string; untilMs: number };

export interface SampleProblemsOptions {
  pool: EndpointPool;
  store: SampleStore;
  problems: readonly Problem[];
  config: SamplerConfig;
  onEvent?: (event: SamplingEvent) => void;
  /** Stops sampling; what is stored stays, and a later run continues from it. */
  signal?: AbortSignal;
  /**
   * The adapter version each new trajectory pins ("" the base expert), asked as it starts;
   * a replica that answers with another fails the sampling. Unset: the replica's active adapter.
   */
  pinAdapter?: () => string;
  /**
   * Uploads a pinned version again to a replica that answers that it does not hold it
   * (evicted, restarted); the trajectory is then written again (counted as a retry). Unset:
   * such an answer fails the sampling.
   */
  restoreAdapter?: RestoreAdapter;
}

export interface SamplingSummary {
  problemsTotal: number;
  /** Problems found in the store at the start (skipped). */
  alreadyStored: number;
  /** Problems stored by this call. */
  sampled: number;
  retries: number;
  /** Store totals, over every run that wrote to it. */
  counts: StoreCounts;
  wallSeconds: number;
  /** False when stopped by the signal before every problem was stored. */
  complete: boolean;
}

/** A problem waiting for (another) trajectory. */
interface Work {
  problem: Problem;
  /** SFT: which of the problem's trajectories this is (0 for the first). */
  attempt: number;
  /** Steps received in earlier SFT attempts. */
  earlierSteps: number;
  retries: number;
}

/** A trajectory being written on a lane. */
interface Running {
  work: Work;
  lane: Lane;
  call: TrajectoryCall;
  requestId: string;
  seed: number;
  /** The version the request named; undefined when it named none. */
  pinned: string | undefined;
  started: TrajectoryStarted | null;
  tokens: number[];
  kls: number[];
  selected: SelectedStep[];
  /** Set when a step could not be used; the trajectory is cancelled and written again. */
  broken: string | null;
}

/** Codes after which the same request may succeed elsewhere or later. */
const RETRYABLE = new Set([Status.UNAVAILABLE, Status.RESOURCE_EXHAUSTED, Status.ABORTED, Status.INTERNAL, Status.UNKNOWN, Status.DEADLINE_EXCEEDED, Status.CANCELLED]);
/** Codes that say the lane itself is in trouble (down, full, shutting down). */
const LANE_TROUBLE = new Set([Status.UNAVAILABLE, Status.RESOURCE_EXHAUSTED, Status.CANCELLED, Status.DEADLINE_EXCEEDED]);
const COMPLETE: Partial<Record<FinishReason, StoredFinishReason>> = {
  [FinishReason.LENGTH]: "length",
  [FinishReason.STOP_STRING]: "stop_string",
  [FinishReason.EOS]: "eos",
  [FinishReason.CONTEXT_LIMIT]: "context_limit",
};

export async function sampleProblems(options: SampleProblemsOptions): Promise<SamplingSummary> {
  return new SamplingRun(options).run();
}

class SamplingRun {
  private readonly queue: Work[];
  private readonly running = new Map<string, Running>();
  private readonly calls = new Map<Lane, TrajectoryCall>();
  private readonly alreadyStored: number;
  private readonly concurrency: number;
  private fatal: Error | null = null;
  /** Problems waiting for their pinned adapter to be uploaded again (neither queued nor running). */
  private restoring = 0;
  private sampled = 0;
  private retries = 0;
  private lastProgress = Date.now();
  private wakeUp: (() => void) | null = null;

  constructor(private readonly o: SampleProblemsOptions) {
    const unique = [...new Map(o.problems.map((p) => [p.id, p])).values()];
    const todo = unique.filter((p) => !o.store.has(p.id));
    this.alreadyStored = unique.length - todo.length;
    this.queue = todo.map((problem) => ({ problem, attempt: 0, earlierSteps: 0, retries: 0 }));
    this.concurrency = Math.min(o.config.concurrency, Math.max(1, o.pool.served.maxTrajectoriesPerStream));
  }

  async run(): Promise<SamplingSummary> {
    const startedAt = Date.now();
    const { signal } = this.o;
    const stopOnAbort = () => this.wake();
    signal?.addEventListener("abort", stopOnAbort);
    const stopWatchingDown = this.o.pool.onLaneDown(({ lane, reason, until }) => this.emit({ type: "lane-down", lane: lane.id, reason, untilMs: until - Date.now() }));
    try {
      while (this.fatal === null && !signal?.aborted) {
        this.dispatch();
        if (this.queue.length === 0 && this.running.size === 0 && this.restoring === 0) break;
        this.checkHealth();
        if (this.fatal) break;
        await this.sleep(this.nextCheckMs());
      }
    } finally {
      signal?.removeEventListener("abort", stopOnAbort);
      await this.closeCalls(this.fatal !== null || signal?.aborted === true);
      stopWatchingDown();
    }
    if (this.fatal) throw this.fatal;
    return {
      problemsTotal: this.o.problems.length,
      alreadyStored: this.alreadyStored,
      sampled: this.sampled,
      retries: this.retries,
      counts: this.o.store.counts(),
      wallSeconds: (Date.now() - startedAt) / 1000,
      complete: this.o.problems.every((p) => this.o.store.has(p.id)),
    };
  }

  /** Starts queued problems on the least busy up lanes while any has room. */
  private dispatch(): void {
    while (this.queue.length > 0 && this.fatal === null) {
      const lane = this.o.pool.pick(this.concurrency);
      if (!lane) return;
      this.start(this.queue.shift()!, lane);
    }
  }

  private start(work: Work, lane: Lane): void {
    const { config } = this.o;
    const call = this.callFor(lane);
    const requestId = `${work.problem.id}/${work.attempt}/${work.retries}`;
    const seed = problemSeed(config.seed, work.problem.id, work.attempt);
    const pinned = this.o.pinAdapter?.();
    const r: Running = { work, lane, call, requestId, seed, pinned, started: null, tokens: [], kls: [], selected: [], broken: null };
    this.running.set(requestId, r);
    this.o.pool.begin(lane);
    const request: MessageInitShape<typeof TrajectoryRequestSchema> = {
      prompt: chatPrompt(work.problem.question, config.systemPrompt),
      sampling: { temperature: config.temperature, topP: config.topP, seed, maxNewTokens: config.maxNewTokens, stopStrings: config.stopStrings },
      distributions: this.distributions(),
      adapter: pinned === undefined ? undefined : adapterSelection(pinned),
    };
    call.start(requestId, request, {
      onStarted: (started) => this.onStarted(r, started),
      onStep: (step) => this.onStep(r, step),
      onFinished: (finished) => this.onFinished(r, finished),
    });
  }

  private distributions(): MessageInitShape<typeof DistributionRequestSchema> {
    const { method, encoding, alpha, topK, fullDtype } = this.o.config;
    if (method === "sft") return { encoding: DistributionEncoding.NONE };
    if (encoding === "sparse") return { encoding: DistributionEncoding.SPARSE, alpha, topK };
    return { encoding: DistributionEncoding.FULL, dtype: fullDtype === "float16" ? FloatDtype.FLOAT16 : FloatDtype.FLOAT32 };
  }

  private callFor(lane: Lane): TrajectoryCall {
    const existing = this.calls.get(lane);
    if (existing && !existing.ended) return existing;
    const call: TrajectoryCall = new TrajectoryCall(lane.client, (error, unfinished) => this.onCallClosed(lane, call, error, unfinished));
    this.calls.set(lane, call);
    return call;
  }

  private onStarted(r: Running, started: TrajectoryStarted): void {
    this.lastProgress = Date.now();
    if (started.seed !== r.seed) this.breakTrajectory(r, `the server used seed ${started.seed}, not the requested ${r.seed}`);
    // Not retried: the same replica would do the same again, and samples from the wrong expert must not be stored.
    if (r.pinned !== undefined && started.adapterVersion !== r.pinned) {
      this.breakTrajectory(r, "wrong adapter");
      this.fail(new AdapterIgnoredError(r.lane.id, `the trajectory of problem ${r.work.problem.id}`, r.pinned, started.adapterVersion));
    }
    r.started = started;
  }

  private onStep(r: Running, step: TrajectoryStep): void {
    this.lastProgress = Date.now();
    if (r.broken) return;
    try {
      if (r.started === null) throw new Error("a step arrived before the trajectory started");
      if (step.step !== r.tokens.length) throw new Error(`step ${step.step} arrived where step ${r.tokens.length} was due`);
      const scored = step.scored;
      if (scored?.tokenId === undefined) throw new Error(`step ${step.step} has no scored.token_id`);
      if (scored.position !== r.started.promptTokenIds.length + step.step) throw new Error(`step ${step.step} has position ${scored.position}, expected ${r.started.promptTokenIds.length + step.step}`);
      if (step.adapterVersion !== r.started.adapterVersion) throw new Error(`step ${step.step} came from adapter ${JSON.stringify(step.adapterVersion)}, the trajectory started on ${JSON.stringify(r.started.adapterVersion)}`);
      r.tokens.push(scored.tokenId);
      if (this.o.config.method === "sft") return;
      const { alpha, beta, label } = this.o.config;
      const decision = selectionOf(step, { alpha, beta, vocabSize: this.o.pool.served.vocabSize });
      r.kls.push(decision.kl);
      if (decision.selected) {
        const target = stepLabel(decision, label);
        r.selected.push({ step: step.step, kl: decision.kl, ids: Array.from(target.ids), weights: Array.from(target.weights) });
      }
    } catch (err) {
      this.breakTrajectory(r, (err as Error).message);
    }
  }

  /** A trajectory whose messages cannot be used: cancel it; it is written again when it finishes. */
  private breakTrajectory(r: Running, reason: string): void {
    r.broken ??= reason;
    r.call.cancel(r.requestId);
  }

  private onFinished(r: Running, finished: TrajectoryFinished): void {
    this.release(r);
    const finishReason = finished.end?.finishReason ?? FinishReason.UNSPECIFIED;
    const reason = COMPLETE[finishReason];
    if (reason !== undefined && r.broken === null) {
      this.lastProgress = Date.now();
      this.complete(r, finished, reason);
    } else if (r.broken !== null) {
      this.retry(r.work, r.lane, r.broken);
    } else if (finishReason === FinishReason.ERROR && finished.error) {
      const { code, message, field } = finished.error;
      if (this.o.restoreAdapter && lostPinnedAdapter({ code, field }, r.pinned)) {
        this.restoreThenRetry(r.work, r.lane, r.pinned, `${Status[code]}: ${message}`);
        return;
      }
      if (!RETRYABLE.has(code)) {
        this.fail(new RequestRefusedError(code, `${r.work.problem.id} (line ${r.work.problem.line})`, r.lane.id, message, field));
        return;
      }
      if (LANE_TROUBLE.has(code)) this.o.pool.markDown(r.lane, `${Status[code]}: ${message}`);
      this.retry(r.work, r.lane, `${Status[code]}: ${message}`);
    } else {
      // Cancelled by the server (it is shutting down) or ended without a reason.
      this.o.pool.markDown(r.lane, `trajectory ended with ${FinishReason[finishReason]}`);
      this.retry(r.work, r.lane, `trajectory ended with ${FinishReason[finishReason]}`);
    }
    this.wake();
  }

  private complete(r: Running, finished: TrajectoryFinished, finishReason: StoredFinishReason): void {
    const { work } = r;
    const { config, store } = this.o;
    const completionTokens = finished.end?.usage?.completionTokens ?? -1;
    if (completionTokens !== r.tokens.length || r.started === null) {
      this.retry(work, r.lane, `the server reported ${completionTokens} completion tokens but sent ${r.tokens.length} steps`);
      return;
    }
    const answer = checkAnswer(finished.completionText, work.problem.reference);
    const stepsSeen = work.earlierSteps + r.tokens.length;
    if (config.method === "sft" && answer.correct === false && work.attempt + 1 < config.sftAttempts) {
      // Rejection sampling: write another trajectory for this problem (a new seed, not a retry).
      this.queue.unshift({ problem: work.problem, attempt: work.attempt + 1, earlierSteps: stepsSeen, retries: 0 });
      return;
    }
    const record: TrajectoryRecord = {
      v: STORE_FORMAT_VERSION,
      kind: "trajectory",
      problemId: work.problem.id,
      question: work.problem.question,
      promptTokenIds: [...r.started.promptTokenIds],
      completionTokenIds: r.tokens,
      completionText: finished.completionText,
      adapterVersion: r.started.adapterVersion,
      finishReason,
      seed: r.seed,
      attempts: work.attempt + 1,
      stepsSeen,
      stepKls: r.kls,
      selected: r.selected,
      answer,
    };
    try {
      store.append(record);
    } catch (err) {
      this.fail(err as Error);
      return;
    }
    this.sampled++;
    this.emit({ type: "problem", problemId: work.problem.id, lane: r.lane.id, stepsSeen, stepsSelected: r.selected.length, kls: r.kls, correct: answer.correct, attempts: work.attempt + 1 });
  }

  /** Uploads the adapter the lane's replica lost, then queues the problem again; a failed upload fails the sampling. */
  private restoreThenRetry(work: Work, lane: Lane, version: string, reason: string): void {
    this.restoring++;
    this.o.restoreAdapter!(version, lane.address)
      .then(
        () => this.retry(work, lane, `${reason} (uploaded it again)`),
        (err: unknown) => this.fail(restoreFailed(lane.id, version, reason, err)),
      )
      .finally(() => {
        this.restoring--;
        this.wake();
      });
  }

  private retry(work: Work, lane: Lane, reason: string): void {
    if (this.fatal || this.o.signal?.aborted) return;
    this.retries++;
    work.retries++;
    if (work.retries > this.o.config.maxRetries) {
      this.fail(new GrpcError(Status.UNAVAILABLE, `problem ${work.problem.id} (line ${work.problem.line}) failed ${work.retries} times; last on ${lane.id}: ${reason}`));
      return;
    }
    this.queue.unshift(work);
    this.emit({ type: "retry", problemId: work.problem.id, lane: lane.id, reason });
  }

  private onCallClosed(lane: Lane, call: TrajectoryCall, error: GrpcError | null, unfinished: string[]): void {
    if (this.calls.get(lane) === call) this.calls.delete(lane);
    const reason = error ? `${error.codeName}: ${error.message}` : "the call ended";
    if (error && unfinished.length > 0 && !this.o.signal?.aborted && this.fatal === null) this.o.pool.markDown(lane, reason);
    for (const id of unfinished) {
      const r = this.running.get(id);
      if (!r) continue;
      this.release(r);
      this.retry(r.work, lane, reason);
    }
    this.wake();
  }

  private release(r: Running): void {
    if (this.running.delete(r.requestId)) this.o.pool.end(r.lane);
  }

  /** Fails the run when no endpoint has made progress for too long, and breaks stalled calls. */
  private checkHealth(): void {
    const now = Date.now();
    const { giveUpAfterMs, stallTimeoutMs } = this.o.config;
    for (const call of this.calls.values()) {
      if (call.size > 0 && now - call.lastActivity > stallTimeoutMs) call.abort(new GrpcError(Status.DEADLINE_EXCEEDED, `no message for ${Math.round(stallTimeoutMs / 1000)} s`));
    }
    if (now - this.lastProgress > giveUpAfterMs) {
      this.fail(new EndpointsExhaustedError(this.o.pool.lanes.map((l) => ({ endpoint: l.id, reason: l.lastError ?? "no progress" })), giveUpAfterMs));
    }
  }

  private nextCheckMs(): number {
    const recovery = this.o.pool.nextRecoveryMs();
    const health = Math.min(1000, this.o.config.stallTimeoutMs, this.o.config.giveUpAfterMs);
    return recovery === null ? health : Math.min(recovery + 1, health);
  }

  private fail(err: Error): void {
    this.fatal ??= err;
    this.wake();
  }

  /** Half-closes every call when done; cancels them when failing or stopped. */
  private async closeCalls(cancel: boolean): Promise<void> {
    const calls = [...this.calls.values()];
    for (const call of calls) {
      if (cancel) call.abort(new GrpcError(Status.CANCELLED, "sampling stopped"));
      else call.end();
    }
    await Promise.all(calls.map((c) => c.closed));
  }

  private emit(event: SamplingEvent): void {
    this.o.onEvent?.(event);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wakeUp = done;
    });
  }

  private wake(): void {
    const wakeUp = this.wakeUp;
    this.wakeUp = null;
    wakeUp?.();
  }
}
