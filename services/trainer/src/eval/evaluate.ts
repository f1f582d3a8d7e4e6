// Greedy accuracy on held-out problems through the inference service's Generate: the expert
// (with the adapter the caller pins, or whatever adapter is active) or the amateur answers each question from the method's
// chat prompt at temperature 0, and the final number is compared with the reference. The
// result keeps one verdict per problem in the problems' order, so two evaluations of the same
// problems (before and after training) pair up for core/math/accuracy's
// pairedDifferenceInterval. Requests are spread over the endpoint pool's lanes; a failing
// endpoint's problems are asked again elsewhere.
import { createHash } from "node:crypto";
import { FinishReason } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { GenerationMode } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { GrpcError, Status, toGrpcError } from "#core/grpc/adapter.ts";
import type { Problem } from "#core/tasks/problems.ts";
import type { EndpointPool, Lane } from "#trainer/sampling/endpoint-pool.ts";
import { AdapterIgnoredError, EndpointsExhaustedError, RequestRefusedError, SamplerConfigError } from "#trainer/sampling/errors.ts";
import { adapterSelection, checkPinned, lostPinnedAdapter, restoreFailed } from "#trainer/sampling/pinned-adapter.ts";
import type { RestoreAdapter } from "#trainer/sampling/pinned-adapter.ts";
import { SYSTEM_PROMPT, chatPrompt } from "#trainer/sampling/prompt.ts";
import { checkAnswer } from "./answer.ts";

export type EvalMode = "expert" | "amateur";

export interface EvaluateOptions {
  pool: EndpointPool;
  problems: readonly Problem[];
  /** Whose accuracy: the expert (default) or the amateur. */
  mode?: EvalMode;
  /**
   * Expert mode: the adapter version every request pins ("" the base expert); a replica that
   * answers with another fails the evaluation. Unset: each replica's active adapter.
   */
  adapter?: string;
  /** Uploads the pinned adapter again to a replica that no longer holds it; the problem is then asked again (a retry). Unset: that fails the evaluation. */
  restoreAdapter?: RestoreAdapter;
  /** Most tokens per answer (default min(512, the endpoints' limit)). */
  maxNewTokens?: number;
  /** Default: the method's "Please reason step by step.". */
  systemPrompt?: string;
  stopStrings?: string[];
  /** Generate calls in flight per lane (default 8). */
  concurrency?: number;
  /** Times one problem may be asked again after endpoint failures (default 8). */
  maxRetries?: number;
  /** Fails when no endpoint answered for this long (default 60 s). */
  giveUpAfterMs?: number;
  /** Called with each problem's outcome as it arrives (in completion order). */
  onRecord?: (record: EvalRecord) => void;
  signal?: AbortSignal;
}

/** One problem's outcome. */
export interface EvalRecord {
  /** Index in the problems given. */
  index: number;
  problemId: string;
  line: number;
  question: string;
  reference: number;
  predicted: number | null;
  correct: boolean;
  output: string;
  finishReason: string;
  completionTokens: number;
  /** The adapter that answered ("" for the base expert and for the amateur). */
  adapterVersion: string;
  lane: string;
}

export interface EvaluationResult {
  mode: EvalMode;
  problems: number;
  correct: number;
  accuracy: number;
  /** Verdicts in the order of the problems given (pair two evaluations with pairedDifferenceInterval). */
  perProblem: boolean[];
  /** Outcomes in the order of the problems given. */
  records: EvalRecord[];
  /** Adapters that answered, in order of first use (more than one if an adapter was pushed mid-way). */
  adapterVersions: string[];
  wallSeconds: number;
}

/**
 * What a greedy evaluation measures, as a digest: the expert's weights (its fingerprint and the
 * adapter version, itself a digest of the adapter's content), the problems, and the settings
 * that shape the answers. Two evaluations with one key give the same verdicts.
 */
export function evaluationKey(what: { expertFingerprint: string; adapter: string; problems: readonly Problem[]; maxNewTokens: number; systemPrompt: string; stopStrings: readonly string[] }): string {
  const problems = what.problems.map((p) => [p.question, p.reference]);
  return createHash("sha256").update(JSON.stringify({ ...what, problems })).digest("hex");
}

const DEFAULT_MAX_NEW_TOKENS = 512;
const DEFAULT_CONCURRENCY = 8;
const RETRYABLE = new Set([Status.UNAVAILABLE, Status.RESOURCE_EXHAUSTED, Status.ABORTED, Status.INTERNAL, Status.UNKNOWN, Status.DEADLINE_EXCEEDED, Status.CANCELLED]);

export async function evaluate(options: EvaluateOptions): Promise<EvaluationResult> {
  const { pool, problems, mode = "expert", signal } = options;
  const maxNewTokens = options.maxNewTokens ?? Math.min(DEFAULT_MAX_NEW_TOKENS, pool.served.maxNewTokens);
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1 || maxNewTokens > pool.served.maxNewTokens) {
    throw new SamplerConfigError("eval.max_new_tokens", `must be an integer in [1, ${pool.served.maxNewTokens}] (the endpoints' limit), got ${maxNewTokens}`);
  }
  const concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new SamplerConfigError("eval.concurrency", `must be an integer >= 1, got ${concurrency}`);
  if (problems.length === 0) throw new SamplerConfigError("eval_problems", "holds no problems");
  for (const p of problems) {
    if (p.reference === null) throw new SamplerConfigError("eval_problems", `the problem on line ${p.line} has no reference answer; evaluation needs one for every problem`);
  }
  const maxRetries = options.maxRetries ?? 8;
  const giveUpAfterMs = options.giveUpAfterMs ?? 60_000;
  const ask: Ask = { systemPrompt: options.systemPrompt ?? SYSTEM_PROMPT, stopStrings: options.stopStrings ?? [], maxNewTokens, mode, adapter: mode === "expert" ? options.adapter : undefined };

  const startedAt = Date.now();
  const records: (EvalRecord | undefined)[] = new Array(problems.length);
  const queue = problems.map((_, i) => i);
  const retries = new Map<number, number>();
  let running = 0;
  let fatal: Error | null = null;
  let lastProgress = Date.now();
  let wake = () => {};

  /** Queues problem `index` again, or fails the evaluation once it has failed too often. */
  const askAgain = (index: number, lane: Lane, reason: string) => {
    const count = (retries.get(index) ?? 0) + 1;
    retries.set(index, count);
    if (count > maxRetries) fatal ??= new GrpcError(Status.UNAVAILABLE, `problem ${problems[index].id} (line ${problems[index].line}) failed ${count} times; last on ${lane.id}: ${reason}`);
    else queue.unshift(index);
  };

  const attempt = async (index: number, lane: Lane) => {
    pool.begin(lane);
    running++;
    try {
      const record = await answer(lane, problems[index], index, ask, signal);
      lastProgress = Date.now();
      records[index] = record;
      options.onRecord?.(record);
    } catch (err) {
      const status = toGrpcError(err);
      if (signal?.aborted) fatal ??= abortError();
      else if (err instanceof AdapterIgnoredError) fatal ??= err;
      else if (options.restoreAdapter && lostPinnedAdapter(status, ask.adapter)) {
        // The lane stays held while the adapter is uploaded again, so the loop waits for it.
        try {
          await options.restoreAdapter(ask.adapter, lane.address);
          askAgain(index, lane, status.message);
        } catch (uploadErr) {
          fatal ??= restoreFailed(lane.id, ask.adapter, status.message, uploadErr);
        }
      } else if (!RETRYABLE.has(status.code)) fatal ??= new RequestRefusedError(status.code, `${problems[index].id} (line ${problems[index].line})`, lane.id, status.message, status.field);
      else {
        if (status.code !== Status.RESOURCE_EXHAUSTED || (retries.get(index) ?? 0) > 0) pool.markDown(lane, `${status.codeName}: ${status.message}`);
        askAgain(index, lane, status.message);
      }
    } finally {
      running--;
      pool.end(lane);
      wake();
    }
  };

  while (fatal === null) {
    if (signal?.aborted) {
      fatal = abortError();
      break;
    }
    for (let lane = pool.pick(concurrency); lane && queue.length > 0; lane = pool.pick(concurrency)) void attempt(queue.shift()!, lane);
    if (queue.length === 0 && running === 0) break;
    if (Date.now() - lastProgress > giveUpAfterMs) {
      fatal = new EndpointsExhaustedError(pool.lanes.map((l) => ({ endpoint: l.id, reason: l.lastError ?? "no answer" })), giveUpAfterMs);
      break;
    }
    const recovery = pool.nextRecoveryMs();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, recovery === null ? 1000 : Math.min(1000, recovery + 1));
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
  if (fatal) {
    // Let the calls still in flight end before reporting (the signal cancels them).
    while (running > 0) await new Promise<void>((resolve) => (wake = resolve));
    throw fatal;
  }
  const done = records as EvalRecord[];
  const perProblem = done.map((r) => r.correct);
  const correct = perProblem.filter(Boolean).length;
  return {
    mode,
    problems: problems.length,
    correct,
    accuracy: correct / problems.length,
    perProblem,
    records: done,
    adapterVersions: [...new Set(done.map((r) => r.adapterVersion))],
    wallSeconds: (Date.now() - startedAt) / 1000,
  };
}

interface Ask {
  systemPrompt: string;
  stopStrings: string[];
  maxNewTokens: number;
  mode: EvalMode;
  adapter: string | undefined;
}

async function answer(lane: Lane, problem: Problem, index: number, ask: Ask, signal: AbortSignal | undefined): Promise<EvalRecord> {
  const stream = lane.client.generate(
    {
      prompt: chatPrompt(problem.question, ask.systemPrompt),
      sampling: { temperature: 0, seed: 0, maxNewTokens: ask.maxNewTokens, stopStrings: ask.stopStrings },
      mode: ask.mode === "expert" ? GenerationMode.EXPERT : GenerationMode.AMATEUR,
      adapter: ask.adapter === undefined ? undefined : adapterSelection(ask.adapter),
    },
    { signal },
  );
  let output = "";
  let adapterVersion: string | null = null;
  let finished = null;
  for await (const message of stream) {
    if (message.event.case === "chunk") {
      output += message.event.value.text;
      if (adapterVersion === null) {
        adapterVersion = message.event.value.adapterVersion;
        if (ask.adapter !== undefined) checkPinned(ask.adapter, adapterVersion, lane.id, `the evaluation of problem ${problem.id}`);
      }
    } else if (message.event.case === "finished") finished = message.event.value;
  }
  if (!finished) throw new GrpcError(Status.UNAVAILABLE, "the Generate stream ended without its finished message");
  const finishReason = finished.end?.finishReason ?? FinishReason.UNSPECIFIED;
  // Cut short by the server (shutting down): the text is incomplete, ask again elsewhere.
  if (finishReason === FinishReason.CANCELLED || finishReason === FinishReason.ERROR || finishReason === FinishReason.UNSPECIFIED) {
    throw new GrpcError(Status.UNAVAILABLE, `the generation ended with ${finishReasonName(finishReason)} before it was complete`);
  }
  const check = checkAnswer(output, problem.reference);
  return {
    index,
    problemId: problem.id,
    line: problem.line,
    question: problem.question,
    reference: problem.reference as number,
    predicted: check.predicted,
    correct: check.correct === true,
    output,
    finishReason: finishReasonName(finishReason),
    completionTokens: finished.end?.usage?.completionTokens ?? 0,
    adapterVersion: adapterVersion ?? "",
    lane: lane.id,
  };
}

function finishReasonName(reason: FinishReason): string {
  return (FinishReason[reason] ?? String(reason)).toLowerCase();
}

function abortError(): Error {
  const err = new Error("evaluation was cancelled");
  err.name = "AbortError";
  return err;
}
