// Trajectory generation driven straight through the inference engine's model runner
// (CausalLmSession.step), no scheduler and no gRPC, so two ways of scoring the amateur can be
// compared on exactly the same batches: "kv-cache" (this project: the amateur advances in
// lockstep with the expert, one incremental token per step) and "re-encode" (the reference
// scripts' way: at every step the amateur runs over the whole prefix again, from an empty
// cache). In both, the expert writes greedily with its own KV cache, a stream stops at EOS as
// the service stops it, and every step pays for the method's full-vocabulary summary (KL,
// entropy, plausible set, top-k), as the service's SPARSE stream does.
import type { LogProbs } from "#core/math/distribution.ts";
import { argmaxToken } from "#core/math/sampling.ts";
import type { SparseStep, SummarizeOptions } from "#core/math/sparse-step.ts";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { ModelRole } from "#inference/engine/served-model.ts";
import { SERVED_GRAPH_OPTIONS, onnxFileIn, servedGraph } from "#inference/engine/served-model.ts";
import { PairSummaryGraph } from "#inference/model/pair-summary-graph.ts";
import type { StepRequest, StepResult } from "#inference/model/session.ts";
import { CausalLmSession } from "#inference/model/session.ts";
import type { GraphOptions } from "#inference/model/onnx-graph.ts";
import { BenchInputError } from "./stats.ts";

export type AmateurScoring = "kv-cache" | "re-encode";

/**
 * The per-step summary a run pays for: in JavaScript (summarizeStep, or the old
 * summarizeStepInPasses) or on the service's ONNX Runtime graph (PairSummaryGraph, async).
 */
export type Summarize = (logpExpert: LogProbs, logpAmateur: LogProbs, options: SummarizeOptions) => SparseStep | Promise<SparseStep>;

export interface EngineRunOptions {
  expert: CausalLmSession;
  amateur: CausalLmSession;
  /** One prompt per concurrent stream (left-padded into one batch when lengths differ). */
  prompts: readonly (readonly number[])[];
  /** Most tokens per stream; a stream also stops at one of eosTokenIds. */
  newTokens: number;
  eosTokenIds: readonly number[];
  scoring: AmateurScoring;
  summarize: Summarize;
  summary: SummarizeOptions;
  /**
   * Most streams per prefill pass (default: all at once). The runner computes logits at
   * every prompt position, so 64 prompts of 64 tokens at vocabulary 151,936 would want
   * 2.5 GB of logits in one pass; decoding still runs every stream in one batch.
   */
  maxPrefillBatch?: number;
}

/** Wall-clock phases of one run of concurrent trajectories. */
export interface RunTiming {
  /** Tokens generated over all streams. */
  tokens: number;
  streams: number;
  /** From the first request to the last token. */
  seconds: number;
  /** From the first request until every stream had its first token (the prompts' prefill). */
  firstTokenSeconds: number;
}

/** A run of this file's loop, which also times its parts. */
export interface EngineRunTiming extends RunTiming {
  /** Of the steps after the prefill: how many, and the seconds spent in each model's step and in the summaries. */
  decodeSteps: number;
  decodeSplit: { expertSeconds: number; amateurSeconds: number; summarySeconds: number };
}

export const tokensPerSecond = (t: RunTiming) => t.tokens / t.seconds;

/** Tokens after each stream's first, per second of the time after the last first token. */
export const decodeTokensPerSecond = (t: RunTiming) => (t.tokens - t.streams) / Math.max(t.seconds - t.firstTokenSeconds, 1e-9);

/** Milliseconds per decode step: its whole wall time, and the expert's, the amateur's and the summaries' parts (the rest is the loop's own work). */
export function decodeStepMs(t: EngineRunTiming): { step: number; expert: number; amateur: number; summary: number } {
  const per = (seconds: number) => (seconds * 1000) / Math.max(t.decodeSteps, 1);
  return { step: per(t.seconds - t.firstTokenSeconds), expert: per(t.decodeSplit.expertSeconds), amateur: per(t.decodeSplit.amateurSeconds), summary: per(t.decodeSplit.summarySeconds) };
}

/**
 * A model as the inference service serves it in `role`: the graph built at start-up (the
 * expert's with LoRA inputs at rank 0, the amateur's without; weights read from
 * model.safetensors, new_key_values outputs) when the directory holds Hugging Face weights,
 * not an ONNX file exported beside them (which may predate the graph builder's changes);
 * otherwise the directory's ONNX file, as the service would. `variant` changes the served
 * graph (Hugging Face weights only).
 */
export async function openServedSession(dir: string, role: ModelRole, variant?: GraphOptions): Promise<CausalLmSession> {
  if (existsSync(join(dir, "config.json")) && existsSync(join(dir, "model.safetensors"))) {
    return CausalLmSession.open(servedGraph(dir, { ...SERVED_GRAPH_OPTIONS[role], ...variant }).graph, { executionProvider: "cpu" });
  }
  // A variant is built from the weights; an ONNX file is whatever it was exported as.
  if (variant) throw new BenchInputError("dir", `${dir} holds no config.json with model.safetensors to build a graph variant from`);
  const file = onnxFileIn(dir);
  if (!file) throw new BenchInputError("dir", `${dir} holds neither config.json with model.safetensors nor an ONNX file`);
  return CausalLmSession.open(file, { executionProvider: "cpu" });
}

/** session.step over `requests` in consecutive groups of at most `group`. */
export async function stepInGroups(session: CausalLmSession, requests: StepRequest[], group: number): Promise<StepResult[]> {
  const out: StepResult[] = [];
  for (let i = 0; i < requests.length; i += group) out.push(...(await session.step(requests.slice(i, i + group))));
  return out;
}

export async function runEngineTrajectories(options: EngineRunOptions): Promise<EngineRunTiming> {
  const { expert, amateur, prompts, newTokens, scoring, summarize, summary, eosTokenIds } = options;
  const maxPrefillBatch = options.maxPrefillBatch ?? prompts.length;
  if (!Number.isInteger(maxPrefillBatch) || maxPrefillBatch < 1) throw new BenchInputError("maxPrefillBatch", `must be a positive integer, got ${maxPrefillBatch}`);
  if (prompts.length === 0) throw new BenchInputError("prompts", "must hold at least one prompt");
  if (prompts.some((p) => p.length === 0)) throw new BenchInputError("prompts", "must not hold an empty prompt");
  if (!Number.isInteger(newTokens) || newTokens < 1) throw new BenchInputError("newTokens", `must be a positive integer, got ${newTokens}`);

  const started = performance.now();
  const streams = prompts.map((p) => ({ expertCache: expert.newCache(), amateurCache: amateur.newCache(), sequence: [...p], pending: [...p], generated: 0 }));
  let active = streams;
  let firstTokenAt = 0;
  let tokens = 0;
  const split = { expertSeconds: 0, amateurSeconds: 0, summarySeconds: 0 };
  let decodeSteps = 0;
  while (active.length > 0) {
    const decoding = firstTokenAt !== 0;
    const group = decoding ? active.length : maxPrefillBatch;
    const t0 = performance.now();
    const expertOut = await stepInGroups(expert, active.map((s) => ({ cache: s.expertCache, tokens: s.pending })), group);
    const t1 = performance.now();
    const amateurOut =
      scoring === "kv-cache"
        ? await stepInGroups(amateur, active.map((s) => ({ cache: s.amateurCache, tokens: s.pending })), group)
        : await stepInGroups(amateur, active.map((s) => ({ cache: amateur.newCache(), tokens: s.sequence })), group);
    const t2 = performance.now();
    // The service summarizes every stream's step concurrently; so does this loop.
    await Promise.all(active.map((_, b) => summarize(expertOut[b].logProbs, amateurOut[b].logProbs, summary)));
    if (decoding) {
      decodeSteps++;
      split.expertSeconds += (t1 - t0) / 1000;
      split.amateurSeconds += (t2 - t1) / 1000;
      split.summarySeconds += (performance.now() - t2) / 1000;
    }
    active.forEach((s, b) => {
      const token = argmaxToken(expertOut[b].logProbs);
      s.sequence.push(token);
      s.pending = [token];
      s.generated++;
      tokens++;
    });
    if (firstTokenAt === 0) firstTokenAt = performance.now();
    active = active.filter((s) => s.generated < newTokens && !eosTokenIds.includes(s.sequence[s.sequence.length - 1]));
  }
  const ended = performance.now();
  // Done with, as the scheduler's finished sequences are: a session's buffers drop their rows instead of handing them back later.
  for (const s of streams) [s.expertCache, s.amateurCache].forEach((c) => c.discard());
  return { tokens, streams: prompts.length, seconds: (ended - started) / 1000, firstTokenSeconds: (firstTokenAt - started) / 1000, decodeSteps, decodeSplit: split };
}

/** The end-to-end loop over one pair, opened once and run as often as wanted. */
export interface LockstepPair {
  run(prompts: readonly (readonly number[])[], newTokens: number, maxPrefillBatch: number): Promise<EngineRunTiming>;
  release(): Promise<void>;
}

/**
 * Both models as the service serves them and the service's summary graph, for the end-to-end
 * loop: the expert greedy, the amateur in lockstep, the SPARSE summary on ONNX Runtime every
 * step (as the service runs it; in JavaScript it is 7x slower at 151,936 tokens).
 */
export async function openLockstepPair(expertDir: string, amateurDir: string, vocabSize: number, summary: SummarizeOptions): Promise<LockstepPair> {
  const expert = await openServedSession(expertDir, "expert");
  const amateur = await openServedSession(amateurDir, "amateur");
  const summaryGraph = await PairSummaryGraph.open(vocabSize);
  const summarize: Summarize = (logpExpert, logpAmateur, options) => summaryGraph.summarize({ logpExpert, logpAmateur, ...options });
  return {
    run: (prompts, newTokens, maxPrefillBatch) => runEngineTrajectories({ expert, amateur, prompts, newTokens, scoring: "kv-cache", summarize, summary, eosTokenIds: [], maxPrefillBatch }),
    release: async () => {
      await Promise.all([expert.release(), amateur.release(), summaryGraph.release()]);
    },
  };
}
