// Section "amateur": what scoring with the amateur costs, measured as such. The method needs
// the amateur's next-token distribution after every prefix of a trajectory; the reference
// scripts get it by re-running the amateur over the whole prefix at every step
// (prompt + t positions at step t, T(T+1)/2 over a trajectory), this project by stepping it
// in lockstep with its KV cache (one position per step). Here the amateur runs alone on
// the same batches of fixed token sequences (a random prompt and a random continuation, as
// if the expert had written it), alternating within each repeat: lockstep; re-encoding with
// the head at the last position only (the served graph); and re-encoding as the reference
// does, the head at every position of the prefix (their Hugging Face forward computes logits
// everywhere), on a variant of the same graph built with head "every position". Then the whole
// lockstep sampling loop (expert writes greedily, amateur scores, SPARSE summary every step)
// runs at the same length, to be held against the machine's ceiling from the limits section.
import type { CausalLmSession, StepResult } from "#inference/model/session.ts";
import { openLockstepPair, openServedSession, decodeStepMs, decodeTokensPerSecond, tokensPerSecond } from "./engine-lockstep.ts";
import type { TokenFlops } from "./flops.ts";
import { flopsPerToken, meanContext } from "./flops.ts";
import type { ModelConfig } from "#core/model/config.ts";
import type { PreparedPair } from "./models.ts";
import { preparePair } from "./models.ts";
import { pairInfo } from "./sampling.ts";
import type { PairInfo } from "./sampling.ts";
import type { AmateurWorkload, BenchSettings } from "./settings.ts";
import type { Measured } from "./stats.ts";
import { BenchInputError, measured, ratio } from "./stats.ts";
import { randomPrompts } from "./workloads.ts";

/** Positions the amateur runs over for one trajectory, each way. */
export interface AmateurPositions {
  /** Prefill of the prompt, then one position per step after the first: prompt + T - 1. */
  lockstep: number;
  /** prompt + t at step t = 0..T-1: T x prompt + T(T-1)/2. */
  reencode: number;
  ratio: number;
}

export function amateurPositions(promptTokens: number, newTokens: number): AmateurPositions {
  if (!Number.isInteger(promptTokens) || promptTokens < 1) throw new BenchInputError("promptTokens", `must be a positive integer, got ${promptTokens}`);
  if (!Number.isInteger(newTokens) || newTokens < 1) throw new BenchInputError("newTokens", `must be a positive integer, got ${newTokens}`);
  const lockstep = promptTokens + newTokens - 1;
  const reencode = newTokens * promptTokens + (newTokens * (newTokens - 1)) / 2;
  return { lockstep, reencode, ratio: reencode / lockstep };
}

/** Multiply-adds for one trajectory, each way (linear layers, causal attention, the LM head), and each re-encoding's over lockstep's. */
export interface AmateurMultiplyAdds {
  /** The LM head at one position of one trajectory (hidden x vocabulary). */
  head: number;
  lockstep: number;
  /** Head at the last position of each step's prefix (the served graph). */
  reencode: number;
  /** Head at every position of each step's prefix (the reference's Hugging Face forward). */
  reencodeEveryPosition: number;
  reencodeRatio: number;
  everyPositionRatio: number;
}

/**
 * Per trajectory: the body runs once per position it covers (position i attends to i keys);
 * the head runs T times in lockstep and in re-encoding with the head at the last position,
 * and at all prompt + t positions of step t for the reference's forward.
 */
export function amateurMultiplyAdds(config: ModelConfig, promptTokens: number, newTokens: number): AmateurMultiplyAdds {
  amateurPositions(promptTokens, newTokens);
  const body = (i: number) => {
    const f = flopsPerToken(config, i);
    return (f.linear + f.attention) / 2;
  };
  const head = flopsPerToken(config, 1).lmHead / 2;
  // Body work over positions 1..n, and prefix sums of it so each re-encoding step is one lookup.
  const longest = promptTokens + newTokens - 1;
  const bodyUpTo = [0];
  for (let i = 1; i <= longest; i++) bodyUpTo.push(bodyUpTo[i - 1] + body(i));
  const lockstep = bodyUpTo[longest] + newTokens * head;
  let reencode = 0;
  let reencodeEveryPosition = 0;
  for (let t = 0; t < newTokens; t++) {
    const n = promptTokens + t;
    reencode += bodyUpTo[n] + head;
    reencodeEveryPosition += bodyUpTo[n] + n * head;
  }
  return { head, lockstep, reencode, reencodeEveryPosition, reencodeRatio: reencode / lockstep, everyPositionRatio: reencodeEveryPosition / lockstep };
}

export interface AmateurCost {
  streams: number;
  /** Seconds to score the whole batch of trajectories. */
  lockstepSeconds: Measured;
  reencodeSeconds: Measured;
  /** Re-encoding as the reference does: the head at every position of the prefix. */
  reencodeEveryPositionSeconds: Measured;
  /** Re-encoding seconds over lockstep seconds (medians). */
  speedup: number | null;
  /** The same for the head at every position. */
  everyPositionSpeedup: number | null;
}

export interface EndToEnd {
  streams: number;
  newTokens: number;
  /** Streams per prefill pass (the runner's logits at every prompt position bound it). */
  maxPrefillBatch: number;
  tokensPerSecond: Measured;
  decodeTokensPerSecond: Measured;
  /** Milliseconds per decode step (after the prefill), whole and in the expert's step, the amateur's step and the summaries. */
  decodeStepMs: { step: Measured; expert: Measured; amateur: Measured; summary: Measured };
  /** Expert + amateur FLOPs per generated token at the trajectory's mean context. */
  expert: TokenFlops;
  amateur: TokenFlops;
  flopsPerToken: number;
  context: number;
}

export interface AmateurPairResult {
  pair: PairInfo;
  promptTokens: number;
  newTokens: number;
  positions: AmateurPositions;
  multiplyAdds: AmateurMultiplyAdds;
  repeats: number;
  cost: AmateurCost;
  endToEnd: EndToEnd | null;
}

export interface AmateurResult {
  how: string;
  pairs: AmateurPairResult[];
}

export const AMATEUR_HOW =
  "both models as the service serves them (the served graph, bench/engine-lockstep.ts openServedSession); the amateur alone through CausalLmSession.step on fixed token sequences (a random prompt and a random continuation): lockstep = prefill, then one token per step with the KV cache; " +
  "re-encoding = at step t the whole prompt + t tokens from an empty cache, the reference scripts' schedule, with the head at the last position only (the served graph), " +
  "and as the reference does, the head at every position (their Hugging Face forward pass computes logits everywhere; the same graph built with head 'every position': the final norm and the LM head over every position of the prefix, the last position's log-softmax cut from those logits inside the graph, so no more leaves ONNX Runtime than the other ways return); " +
  "every way returns the full-vocabulary log-probabilities every step, the three alternate within each repeat on the same batch; multiply-adds: linear layers, causal attention and the head per trajectory; " +
  "end to end = expert greedy + amateur lockstep + SPARSE summary every step (on the service's ONNX Runtime summary graph, PairSummaryGraph) in the benchmark process, the full length (EOS not honoured, so every stream writes every token)";

/**
 * Seconds for the amateur to score every trajectory of the batch one way: the distribution
 * before each of the continuation's tokens. `onStep` sees each step's results (tests check
 * that both ways compute the same distributions).
 */
export async function scoreTrajectories(
  amateur: CausalLmSession,
  prompts: readonly number[][],
  continuations: readonly number[][],
  way: "lockstep" | "re-encode",
  onStep: (t: number, results: StepResult[]) => void = () => {},
): Promise<number> {
  if (prompts.length === 0 || prompts.length !== continuations.length) throw new BenchInputError("continuations", `must hold one continuation per prompt (${prompts.length} prompts, ${continuations.length} continuations)`);
  const newTokens = continuations[0].length;
  if (newTokens < 1 || continuations.some((c) => c.length !== newTokens)) throw new BenchInputError("continuations", "must all hold the same number of tokens, at least one");
  const started = performance.now();
  if (way === "lockstep") {
    const caches = prompts.map(() => amateur.newCache());
    onStep(0, await amateur.step(prompts.map((p, b) => ({ cache: caches[b], tokens: p }))));
    for (let t = 1; t < newTokens; t++) onStep(t, await amateur.step(continuations.map((c, b) => ({ cache: caches[b], tokens: [c[t - 1]] }))));
    for (const c of caches) c.discard();
  } else {
    for (let t = 0; t < newTokens; t++) onStep(t, await amateur.step(prompts.map((p, b) => ({ cache: amateur.newCache(), tokens: [...p, ...continuations[b].slice(0, t)] }))));
  }
  return (performance.now() - started) / 1000;
}

async function amateurCost(prepared: PreparedPair, workload: AmateurWorkload, log: (line: string) => void): Promise<AmateurCost> {
  const vocab = prepared.amateur.config.vocabSize;
  const prompts = randomPrompts(vocab, workload.streams, workload.promptTokens, 23);
  const continuations = randomPrompts(vocab, workload.streams, workload.newTokens, 29);
  const amateur = await openServedSession(prepared.amateur.dir, "amateur");
  const everyPosition = await openServedSession(prepared.amateur.dir, "amateur", { head: "every position" });
  try {
    // A short warm-up of every way: ONNX Runtime sizes its buffers on a shape's first run.
    const warmUp = continuations.map((c) => c.slice(0, 2));
    await scoreTrajectories(amateur, prompts, warmUp, "lockstep");
    await scoreTrajectories(amateur, prompts, warmUp, "re-encode");
    await scoreTrajectories(everyPosition, prompts, warmUp, "re-encode");
    const lockstep: number[] = [];
    const reencode: number[] = [];
    const reencodeEveryPosition: number[] = [];
    for (let r = 0; r < workload.repeats; r++) {
      lockstep.push(await scoreTrajectories(amateur, prompts, continuations, "lockstep"));
      reencode.push(await scoreTrajectories(amateur, prompts, continuations, "re-encode"));
      reencodeEveryPosition.push(await scoreTrajectories(everyPosition, prompts, continuations, "re-encode"));
      log(
        `  amateur ${workload.name} x${workload.streams}: lockstep ${lockstep[r].toFixed(2)} s, re-encoding ${reencode[r].toFixed(2)} s, ` +
          `re-encoding with the head at every position ${reencodeEveryPosition[r].toFixed(2)} s`,
      );
    }
    const lockstepSeconds = measured(lockstep, "s");
    const reencodeSeconds = measured(reencode, "s");
    const reencodeEveryPositionSeconds = measured(reencodeEveryPosition, "s");
    return {
      streams: workload.streams,
      lockstepSeconds,
      reencodeSeconds,
      reencodeEveryPositionSeconds,
      speedup: ratio(reencodeSeconds, lockstepSeconds),
      everyPositionSpeedup: ratio(reencodeEveryPositionSeconds, lockstepSeconds),
    };
  } finally {
    await Promise.all([amateur.release(), everyPosition.release()]);
  }
}

async function endToEnd(prepared: PreparedPair, workload: AmateurWorkload, settings: BenchSettings, log: (line: string) => void): Promise<EndToEnd | null> {
  const e2e = workload.endToEnd;
  if (!e2e) return null;
  const prompts = randomPrompts(prepared.expert.config.vocabSize, e2e.streams, workload.promptTokens, 31);
  const pair = await openLockstepPair(prepared.expert.dir, prepared.amateur.dir, prepared.expert.config.vocabSize, { alpha: settings.sampling.alpha, topK: settings.sampling.topK });
  try {
    await pair.run(prompts, 2, e2e.maxPrefillBatch);
    const runs = [];
    const steps = [];
    for (let r = 0; r < e2e.repeats; r++) {
      runs.push(await pair.run(prompts, workload.newTokens, e2e.maxPrefillBatch));
      const ms = decodeStepMs(runs[r]);
      steps.push(ms);
      log(
        `  end to end ${workload.name} x${e2e.streams}: ${tokensPerSecond(runs[r]).toFixed(1)} tokens/s (${decodeTokensPerSecond(runs[r]).toFixed(1)} after the prefill; a decode step ${ms.step.toFixed(1)} ms: expert ${ms.expert.toFixed(1)}, amateur ${ms.amateur.toFixed(1)}, summaries ${ms.summary.toFixed(1)})`,
      );
    }
    const context = meanContext(workload.promptTokens, workload.newTokens);
    const ex = flopsPerToken(prepared.expert.config, context);
    const am = flopsPerToken(prepared.amateur.config, context);
    return {
      streams: e2e.streams,
      newTokens: workload.newTokens,
      maxPrefillBatch: e2e.maxPrefillBatch,
      tokensPerSecond: measured(runs.map(tokensPerSecond), "tokens/s"),
      decodeTokensPerSecond: measured(runs.map(decodeTokensPerSecond), "tokens/s"),
      decodeStepMs: {
        step: measured(steps.map((ms) => ms.step), "ms"),
        expert: measured(steps.map((ms) => ms.expert), "ms"),
        amateur: measured(steps.map((ms) => ms.amateur), "ms"),
        summary: measured(steps.map((ms) => ms.summary), "ms"),
      },
      expert: ex,
      amateur: am,
      flopsPerToken: ex.total + am.total,
      context,
    };
  } finally {
    await pair.release();
  }
}

export async function runAmateur(settings: BenchSettings, log: (line: string) => void): Promise<AmateurResult> {
  const pairs: AmateurPairResult[] = [];
  for (const workload of settings.amateur.pairs) {
    const prepared = await preparePair(workload.recipe, settings.cacheDir, log);
    const cost = await amateurCost(prepared, workload, log);
    pairs.push({
      pair: pairInfo(prepared),
      promptTokens: workload.promptTokens,
      newTokens: workload.newTokens,
      positions: amateurPositions(workload.promptTokens, workload.newTokens),
      multiplyAdds: amateurMultiplyAdds(prepared.amateur.config, workload.promptTokens, workload.newTokens),
      repeats: workload.repeats,
      cost,
      endToEnd: await endToEnd(prepared, workload, settings, log),
    });
  }
  return { how: AMATEUR_HOW, pairs };
}
