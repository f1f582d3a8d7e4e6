// Continuous batching for the expert/amateur pair. Each tick the scheduler admits waiting
// sequences up to the batch limit, runs ONE batched expert step per adapter session in use
// and ONE batched amateur step over every ready sequence (prefills and decodes together),
// lets each sequence pick its token with its own sampler, and retires the finished ones.
// New sequences join and finished ones leave between ticks, never inside one. A sequence
// whose reader is behind sits out ticks (paused) until its sink resumes it, so nothing
// is produced faster than it is consumed.
import type { TextTokenizer } from "#core/formats/tokenizer.ts";
import type { KvCache } from "#inference/model/kv-cache.ts";
import type { SamplingGraph } from "#inference/model/sampling-graph.ts";
import type { CausalLmSession, StepResult } from "#inference/model/session.ts";
import type { AdapterRegistry } from "./adapter-registry.ts";
import { ACTIVE_ADAPTER } from "./adapter-registry.ts";
import { CapacityError, InvalidRequestError, ShuttingDownError } from "./errors.ts";
import type { FinishReason, SequenceRequest, SequenceSink, StepEvent } from "./sequence.ts";
import { Sequence } from "./sequence.ts";

export interface SchedulerLimits {
  /** Sequences computed together in one forward pass. */
  maxBatchSize: number;
  /** Sequences admitted or waiting at once; beyond it submit() refuses. */
  maxSequences: number;
  /** Most tokens (prompt + completion) a sequence may reach: the smaller model context. */
  maxContextTokens: number;
  /** How long a tick waits for sequences whose reader is behind (see BatchGather); default DEFAULT_BATCH_GATHER. */
  gather?: BatchGather;
  /**
   * Prompt tokens prefilled in one batch; PREFILL_TOKENS_PER_BATCH unless the server sets
   * fewer. A longer prompt is prefilled in chunks of this many tokens, one chunk a tick, where
   * its models' graphs take a prompt after a past (CausalLmSession.takesPromptAfterPast), and
   * alone in one batch where they do not.
   */
  prefillTokensPerBatch: number;
}

/**
 * Before a step, the scheduler waits for running sequences that sit out because their last
 * message has not been taken by the transport yet, for at most `fraction` of the previous
 * step's duration and never more than `maxMs`, and until all of them are back. Without the
 * wait, a call carrying more trajectories than its transport buffers at once (16 messages in
 * grpc-js) alternates partial batches: those whose message went out run while the others
 * wait for the buffer to drain, and the batch never becomes whole again (lightreasoner bench,
 * section sampling, column "service batch"). A reader that really is behind costs the others
 * at most this fraction of a step. `{ fraction: 0 }` steps at once with whoever is ready.
 */
export interface BatchGather {
  fraction: number;
  maxMs: number;
}

export const DEFAULT_BATCH_GATHER: Readonly<BatchGather> = Object.freeze({ fraction: 0.5, maxMs: 50 });

export type ModelRole = "expert" | "amateur";

/** Hooks for metrics; every one is optional and must not throw. */
export interface SchedulerObserver {
  /** `adapterVersions`: distinct expert versions (the base expert counts as one) in the batch; 0 for the amateur. */
  batchRan?(model: ModelRole, batchSize: number, seconds: number, adapterVersions: number): void;
  /** A token chosen by a sequence that runs the expert, on that version ("" for the base expert). */
  tokenGenerated?(adapterVersion: string): void;
  sequenceAdmitted?(queueWaitSeconds: number): void;
  firstStep?(seconds: number): void;
  sequenceFinished?(reason: FinishReason): void;
}

export interface SequenceHandle {
  /** Stops the sequence at the next step boundary; it finishes as "cancelled". */
  cancel(): void;
  /** The sink caught up after onStep returned false. */
  resume(): void;
}

export interface SchedulerLoad {
  /** Sequences holding a batch slot (paused ones included). */
  running: number;
  /** Running sequences sitting out ticks because their reader is behind. */
  paused: number;
  /** Sequences waiting for a batch slot. */
  waiting: number;
}

export class Scheduler {
  private readonly waiting: Sequence[] = [];
  private readonly running: Sequence[] = [];
  private wake: (() => void) | null = null;
  /** Milliseconds the last tick took (what the gather wait is a fraction of). */
  private lastTickMs = 0;
  private accepting = true;
  private stopped = false;
  private readonly loopDone: Promise<void>;

  constructor(
    private readonly adapters: AdapterRegistry,
    private readonly amateur: CausalLmSession,
    private readonly tokenizer: TextTokenizer,
    readonly limits: SchedulerLimits,
    private readonly observer: SchedulerObserver = {},
    /** Where temperature and nucleus sampling run (ONNX Runtime); null: core/math. */
    private readonly sampling: SamplingGraph | null = null,
  ) {
    this.loopDone = this.loop();
  }

  get load(): SchedulerLoad {
    return { running: this.running.length, paused: this.running.filter((s) => s.paused).length, waiting: this.waiting.length };
  }

  /** Queues a sequence; its sink hears onStart at admission, onStep per token and onFinish once. */
  submit(request: SequenceRequest, sink: SequenceSink): SequenceHandle {
    if (!this.accepting) throw new ShuttingDownError();
    if (request.promptIds.length === 0) throw new InvalidRequestError("prompt", "encodes to no tokens");
    if (request.promptIds.length >= this.limits.maxContextTokens) {
      throw new InvalidRequestError("prompt", `has ${request.promptIds.length} tokens; the models' context of ${this.limits.maxContextTokens} leaves no room for a completion`);
    }
    if (this.running.length + this.waiting.length >= this.limits.maxSequences) {
      throw new CapacityError(`too many concurrent sequences (limit ${this.limits.maxSequences}); retry later`);
    }
    const sequence = new Sequence(request, sink, this.tokenizer.streamDecoder({ skipSpecialTokens: request.skipSpecialTokens }));
    // NotFoundError for a version that is not loaded, before anything is queued.
    if (sequence.needsExpert) sequence.lease = this.adapters.lease(request.adapter ?? ACTIVE_ADAPTER);
    this.waiting.push(sequence);
    this.poke();
    return {
      cancel: () => {
        sequence.cancelled = true;
        this.poke();
      },
      resume: () => {
        sequence.paused = false;
        this.poke();
      },
    };
  }

  /** Stops admitting; running sequences get until the deadline to finish, then are cancelled. */
  async shutdown(deadlineMs: number): Promise<void> {
    this.accepting = false;
    const until = Date.now() + deadlineMs;
    while (this.running.length + this.waiting.length > 0 && Date.now() < until) await sleep(Math.min(20, Math.max(1, until - Date.now())));
    for (const s of [...this.running, ...this.waiting]) s.cancelled = true;
    this.stopped = true;
    this.poke();
    await this.loopDone;
  }

  private poke(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  private async loop(): Promise<void> {
    for (;;) {
      this.retireCancelled();
      if (this.stopped && this.running.length === 0 && this.waiting.length === 0) return;
      this.admit();
      let ready = this.running.filter((s) => !s.paused);
      if (ready.length === 0) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        continue;
      }
      if (ready.length < this.running.length && (await this.gatherPaused())) continue;
      ready = this.running.filter((s) => !s.paused);
      const started = performance.now();
      try {
        await this.tick(ready);
        this.lastTickMs = performance.now() - started;
      } catch (err) {
        // Not expected (tick isolates its failures), but the loop must outlive anything.
        for (const s of ready) this.finish(s, "error", err as Error);
      }
      // Let gRPC writes, cancellations and new calls in between ticks.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /**
   * Waits (see BatchGather) for paused running sequences to be resumed; true when the loop
   * must start over because something else changed meanwhile (a stop, a cancellation).
   */
  private async gatherPaused(): Promise<boolean> {
    const { fraction, maxMs } = this.limits.gather ?? DEFAULT_BATCH_GATHER;
    const until = performance.now() + Math.min(maxMs, fraction * this.lastTickMs);
    for (;;) {
      const left = until - performance.now();
      if (left <= 0 || this.running.every((s) => !s.paused)) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
      if (this.stopped || this.running.some((s) => s.cancelled)) return true;
    }
  }

  private admit(): void {
    while (this.waiting.length > 0 && this.running.length < this.limits.maxBatchSize) {
      const s = this.waiting.shift()!;
      s.admittedAt = performance.now();
      if (s.needsExpert) s.expertCache = s.lease!.session.newCache();
      if (s.needsAmateur) s.amateurCache = this.amateur.newCache();
      this.running.push(s);
      this.observer.sequenceAdmitted?.((s.admittedAt - s.submittedAt) / 1000);
      this.notify(s, () => s.sink.onStart?.({ adapterVersion: this.versionOf(s), seed: s.request.seed }));
    }
  }

  /**
   * One batched expert call (its rows may run different adapters: each passes its own) and
   * one amateur call, each split in two: sequences in prefill (a prompt, or its next chunk after
   * the cache the earlier chunks left) and sequences decoding (one token after their cache). Kept apart because graphs exported by other tools (ONNX
   * Runtime GenAI's GroupQueryAttention) accept either a prompt with no past or one token
   * after a past, never a mix, and because a decode padded to a prompt's length wastes work.
   */
  private async tick(ready: Sequence[]): Promise<void> {
    const expertBatches: Batch[] = [];
    const sessions = new Map<CausalLmSession, Sequence[]>();
    for (const s of ready) {
      if (!s.needsExpert) continue;
      const group = sessions.get(s.lease!.session) ?? [];
      group.push(s);
      sessions.set(s.lease!.session, group);
    }
    const prefillTokens = this.limits.prefillTokensPerBatch;
    // What each sequence feeds this tick: all its pending tokens, or the next chunk of a long prompt.
    const fed = new Map(ready.map((s) => [s, s.pending.length > prefillTokens && this.chunkable(s) ? s.pending.slice(0, prefillTokens) : s.pending]));
    const tokensOf = (s: Sequence) => fed.get(s)!;
    for (const [session, group] of sessions) expertBatches.push(...byPhase(group, (s) => s.expertCache!, tokensOf, prefillTokens).map((batch) => ({ session, batch, cacheOf: (s: Sequence) => s.expertCache! })));
    const amateurBatches = byPhase(ready.filter((s) => s.needsAmateur), (s) => s.amateurCache!, tokensOf, prefillTokens).map((batch) => ({ session: this.amateur, batch, cacheOf: (s: Sequence) => s.amateurCache! }));
    const expertResults = new Map<Sequence, StepResult>();
    const amateurResults = new Map<Sequence, StepResult>();
    const failed = new Map<Sequence, Error>();
    // One model after the other, never side by side: onnxruntime-node runs a session on the
    // calling thread, so two runs started together would only queue back to back and hold the
    // event loop for both, where one after the other lets I/O through between them.
    await this.runAll("expert", expertBatches, expertResults, failed, tokensOf);
    await this.runAll("amateur", amateurBatches, amateurResults, failed, tokensOf);
    for (const s of ready) {
      const error = failed.get(s);
      const unread = s.pending.length - tokensOf(s).length;
      try {
        if (error) this.finish(s, "error", error);
        else if (unread > 0) this.readOn(s, unread);
        else await this.advance(s, expertResults.get(s)?.logProbs, amateurResults.get(s)?.logProbs);
      } catch (err) {
        // One sequence's failure (a sink that throws, NaN logits) ends only that sequence.
        this.finish(s, "error", err as Error);
      }
    }
  }

  /** True when every model a sequence runs can take its prompt in chunks after a past. */
  private chunkable(s: Sequence): boolean {
    return (!s.needsExpert || s.lease!.session.takesPromptAfterPast) && (!s.needsAmateur || this.amateur.takesPromptAfterPast);
  }

  /** A chunk of the prompt is in the caches and `unread` tokens are not: no token this tick. */
  private readOn(s: Sequence, unread: number): void {
    if (s.cancelled) return this.finish(s, "cancelled");
    s.pending = s.pending.slice(s.pending.length - unread);
  }

  /** Runs one model's batches, each sequence on `tokensOf` it; a batch that fails fails only its own sequences. */
  private async runAll(model: ModelRole, batches: Batch[], results: Map<Sequence, StepResult>, failed: Map<Sequence, Error>, tokensOf: (s: Sequence) => number[]): Promise<void> {
    for (const { session, batch, cacheOf } of batches) {
      const started = performance.now();
      try {
        const out = await session.step(batch.map((s) => ({ cache: cacheOf(s), tokens: tokensOf(s), adapter: model === "expert" ? s.lease!.adapter : null })));
        const versions = model === "expert" ? new Set(batch.map((s) => s.lease!.version)).size : 0;
        this.observer.batchRan?.(model, batch.length, (performance.now() - started) / 1000, versions);
        batch.forEach((s, i) => results.set(s, out[i]));
      } catch (err) {
        for (const s of batch) failed.set(s, err as Error);
      }
    }
  }

  private async advance(s: Sequence, logpExpert: Float32Array | undefined, logpAmateur: Float32Array | undefined): Promise<void> {
    if (s.finished) return;
    // A sequence cancelled while the step ran, or while its token was drawn, does not emit the step's token.
    if (s.cancelled) return this.finish(s, "cancelled");
    const tokenId = await s.choose(logpExpert, logpAmateur, this.sampling);
    if (s.finished) return;
    if (s.cancelled) return this.finish(s, "cancelled");
    const step = s.completion.length;
    s.completion.push(tokenId);
    s.pending = [tokenId];
    const text = s.decoder.push(tokenId);
    s.completionText += text;
    if (s.lease) this.observer.tokenGenerated?.(s.lease.version);
    if (step === 0) {
      s.firstStepAt = performance.now();
      this.observer.firstStep?.((s.firstStepAt - s.submittedAt) / 1000);
    }
    const event: StepEvent = {
      step,
      position: s.request.promptIds.length + step,
      tokenId,
      text,
      logpExpert: s.request.mode === "amateur" ? undefined : logpExpert,
      logpAmateur: s.request.mode === "expert" ? undefined : logpAmateur,
      adapterVersion: this.versionOf(s),
    };
    if (!s.sink.onStep(event)) s.paused = true;

    const stop = s.request.stopStrings.find((stopString) => s.completionText.includes(stopString));
    if (this.tokenizer.eosTokenIds.includes(tokenId)) this.finish(s, "eos");
    else if (stop !== undefined) this.finish(s, "stop", undefined, stop);
    else if (s.completion.length >= s.request.maxNewTokens) this.finish(s, "length");
    else if (s.request.promptIds.length + s.completion.length >= this.limits.maxContextTokens) this.finish(s, "context");
  }

  private retireCancelled(): void {
    for (const s of [...this.running, ...this.waiting]) if (s.cancelled && !s.finished) this.finish(s, "cancelled");
  }

  private finish(s: Sequence, reason: FinishReason, error?: Error, stopString?: string): void {
    if (s.finished) return;
    s.finished = true;
    for (const list of [this.running, this.waiting]) {
      const i = list.indexOf(s);
      if (i >= 0) list.splice(i, 1);
    }
    const now = performance.now();
    const version = this.versionOf(s);
    s.lease?.release();
    // A finished sequence's positions are dropped where they are (a session's batch buffers may hold them), never copied back.
    s.expertCache?.discard();
    s.amateurCache?.discard();
    s.expertCache = null;
    s.amateurCache = null;
    this.observer.sequenceFinished?.(reason);
    this.notify(s, () =>
      s.sink.onFinish({
        reason,
        error,
        stopString,
        promptTokens: s.request.promptIds.length,
        completionTokens: s.completion.length,
        completionText: s.completionText,
        queueWaitMs: (s.admittedAt || now) - s.submittedAt,
        timeToFirstStepMs: s.firstStepAt ? s.firstStepAt - s.submittedAt : now - s.submittedAt,
        totalMs: now - s.submittedAt,
        adapterVersion: version,
      }),
    );
    this.poke();
  }

  /** Sink callbacks run the caller's code; one that throws must not stop the loop for everyone. */
  private notify(s: Sequence, call: () => void): void {
    try {
      call();
    } catch (err) {
      if (!s.finished) this.finish(s, "error", err as Error);
    }
  }

  /** The adapter version a sequence's expert runs on ("" for the base model or amateur-only). */
  private versionOf(s: Sequence): string {
    return s.lease?.version ?? "";
  }
}

interface Batch {
  session: CausalLmSession;
  batch: Sequence[];
  cacheOf: (s: Sequence) => KvCache;
}

/**
 * Prompt tokens per prefill batch, by default. ONNX Runtime keeps its arena at the size of the
 * largest step's activations for good: 64 prompts of 64 tokens prefilled as one batch left
 * about 4 MiB per stream there (bench/stream-memory.ts --prefill-group), where batches of 512
 * tokens run the matrix products about as efficiently. A batch also holds the event loop for
 * its whole run (1.5 s at the 0.5B shape on 2 CPUs), so a server may set fewer. A longer
 * prompt is read in chunks of this size, so neither bound depends on what a client sends.
 */
export const PREFILL_TOKENS_PER_BATCH = 512;

/** `items` in order, in consecutive groups of at most `maxTokens` tokens (an item larger than that alone). */
export function groupByTokens<T>(items: readonly T[], tokensOf: (item: T) => number, maxTokens: number): T[][] {
  const groups: T[][] = [];
  let tokens = 0;
  for (const item of items) {
    const n = tokensOf(item);
    if (groups.length === 0 || tokens + n > maxTokens) {
      groups.push([]);
      tokens = 0;
    }
    groups[groups.length - 1].push(item);
    tokens += n;
  }
  return groups;
}

/**
 * The prefilling sequences (in batches of at most `prefillTokens` tokens) and the decoding ones
 * (one token after a past), as separate non-empty batches. A prompt's later chunk, after a
 * past, goes with the prefills.
 */
function byPhase(sequences: Sequence[], cacheOf: (s: Sequence) => KvCache, tokensOf: (s: Sequence) => number[], prefillTokens: number): Sequence[][] {
  const decoding = (s: Sequence) => cacheOf(s).length > 0 && tokensOf(s).length === 1;
  const prefill = sequences.filter((s) => !decoding(s));
  const decode = sequences.filter(decoding);
  return [...groupByTokens(prefill, (s) => tokensOf(s).length, prefillTokens), decode].filter((batch) => batch.length > 0);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
