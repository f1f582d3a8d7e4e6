// Section "sampling": lockstep trajectory generation (the expert writes, the amateur scores,
// the full-vocabulary summary every step) in tokens per second at several concurrent stream
// counts, measured two ways: straight through the engine's model runner in this process,
// where the amateur is also run the reference's way (re-encoding the whole prefix every
// step) on the same batches, and through the real service (`lightreasoner serve inference`
// as a child process, StreamTrajectories over loopback gRPC). Runs of the compared variants
// alternate within each repeat, so a neighbour's load falls on both sides of a ratio.
import { TextTokenizer } from "#core/formats/tokenizer.ts";
import { summarizeStep, summarizeStepInPasses } from "#core/math/sparse-step.ts";
import type { AmateurScoring, RunTiming, Summarize } from "./engine-lockstep.ts";
import { decodeTokensPerSecond, openServedSession, runEngineTrajectories, tokensPerSecond } from "./engine-lockstep.ts";
import type { PreparedPair } from "./models.ts";
import { preparePair } from "./models.ts";
import type { ProcessMemory } from "#core/metrics/process-memory.ts";
import { batchSizeTotals, serveInference } from "./processes.ts";
import type { BenchSettings, PairWorkload } from "./settings.ts";
import type { Measured } from "./stats.ts";
import { measured, median, ratio } from "./stats.ts";
import { runServiceTrajectories } from "./trajectory-client.ts";
import { ensureWorld, randomPrompts, worldPrompts } from "./workloads.ts";

export interface SamplingCell {
  streams: number;
  /** Tokens generated per run (median over repeats; runs that stop at EOS vary). */
  tokens: number;
  /** All tokens over the whole run, prompt prefill included. */
  tokensPerSecond: Measured;
  /** Tokens after each stream's first, over the time after the prefill. */
  decodeTokensPerSecond: Measured;
  /** Seconds until every stream had its first token. */
  firstTokenSeconds: Measured;
}

export interface ReencodeComparison {
  streams: number;
  kvCache: SamplingCell;
  reencode: SamplingCell;
  /** kvCache tokens/s over reencode tokens/s: the headline. */
  speedup: number | null;
}

export interface SummaryComparison {
  streams: number;
  /** The step summary as first written: one pass over the vocabulary per quantity. */
  inPasses: SamplingCell;
  /** The single-pass summary the service now runs. */
  singlePass: SamplingCell;
  speedup: number | null;
}

export interface PairInfo {
  name: string;
  description: string;
  expertDir: string;
  amateurDir: string;
  expertParameters: number;
  amateurParameters: number;
  vocabSize: number;
  preparedSeconds: number;
  reusedCache: boolean;
}

export interface ServedCell extends SamplingCell {
  /** The service process's memory after this stream count's runs (peak since it started). */
  memory: ProcessMemory;
  /** Sequences per expert forward pass over the measured runs, from the service's batch-size metric. */
  meanExpertBatch: number;
}

export interface PairSampling {
  pair: PairInfo;
  workload: { name: string; prompts: string; promptTokens: { min: number; max: number }; newTokens: number; repeats: number };
  engine: { lockstep: SamplingCell[]; reencode: ReencodeComparison[]; summary: SummaryComparison[] };
  /** Null when the workload runs no stream count through the service. */
  service: { startSeconds: number; idleMemory: ProcessMemory; cells: ServedCell[]; gather: GatherComparison | null } | null;
}

/**
 * The second optimization, at the most streams: the scheduler waiting briefly for sequences
 * whose message the transport has not taken yet (--batch-gather-ms, default 50) against
 * stepping at once with whoever is ready (--batch-gather-ms 0), the way it first worked.
 */
export interface GatherComparison {
  streams: number;
  without: ServedCell;
  with: ServedCell;
  /** Decode tokens/s with over without. */
  speedup: number | null;
}

export interface SamplingResult {
  how: string;
  alpha: number;
  topK: number;
  pairs: PairSampling[];
}

export const SAMPLING_HOW =
  "engine: CausalLmSession.step in the benchmark process (no scheduler, no gRPC), expert greedy, both models KV-cached, " +
  "or the amateur re-encoding the whole prefix every step; service: `lightreasoner serve inference` child process, " +
  "all trajectories on one StreamTrajectories call over loopback gRPC; every step computes the SPARSE summary " +
  "(full-vocabulary KL, entropy, plausible set, top-k) as the trainer's sampler asks for it";

export function pairInfo(prepared: PreparedPair): PairInfo {
  return {
    name: prepared.recipe.name,
    description: prepared.recipe.description,
    expertDir: prepared.expert.dir,
    amateurDir: prepared.amateur.dir,
    expertParameters: prepared.expert.parameters,
    amateurParameters: prepared.amateur.parameters,
    vocabSize: prepared.expert.config.vocabSize,
    preparedSeconds: prepared.preparedSeconds,
    reusedCache: prepared.reusedCache,
  };
}

export function promptsFor(workload: PairWorkload, prepared: PreparedPair, count: number, cacheDir: string): number[][] {
  if (workload.prompts === "world") return worldPrompts(ensureWorld(cacheDir), prepared.expert.dir, count);
  return randomPrompts(prepared.expert.config.vocabSize, count, workload.prompts, 17);
}

/** Collects repeated runs of one variant into a cell. */
class CellRecorder {
  private readonly runs: RunTiming[] = [];
  constructor(readonly streams: number) {}

  add(run: RunTiming): void {
    this.runs.push(run);
  }

  cell(): SamplingCell {
    return {
      streams: this.streams,
      tokens: median(this.runs.map((r) => r.tokens)),
      tokensPerSecond: measured(this.runs.map(tokensPerSecond), "tokens/s"),
      decodeTokensPerSecond: measured(this.runs.map(decodeTokensPerSecond), "tokens/s"),
      firstTokenSeconds: measured(this.runs.map((r) => r.firstTokenSeconds), "s"),
    };
  }
}

async function engineCells(workload: PairWorkload, prepared: PreparedPair, prompts: number[][], settings: BenchSettings, log: (line: string) => void): Promise<PairSampling["engine"]> {
  const [expert, amateur] = [await openServedSession(prepared.expert.dir, "expert"), await openServedSession(prepared.amateur.dir, "amateur")];
  const eosTokenIds = TextTokenizer.load(prepared.expert.dir).eosTokenIds;
  const summary = { alpha: settings.sampling.alpha, topK: settings.sampling.topK };
  const run = (streams: number, scoring: AmateurScoring, summarize: Summarize, newTokens = workload.newTokens) =>
    runEngineTrajectories({ expert, amateur, prompts: prompts.slice(0, streams), newTokens, scoring, summarize, summary, eosTokenIds });
  const out: PairSampling["engine"] = { lockstep: [], reencode: [], summary: [] };
  try {
    for (const streams of workload.streams) {
      const reencodeToo = workload.reencodeStreams.includes(streams);
      const summaryToo = workload.summaryStreams.includes(streams);
      // A short warm-up per batch size: ONNX Runtime sizes its buffers on a shape's first run.
      await run(streams, "kv-cache", summarizeStep, 2);
      const lockstep = new CellRecorder(streams);
      const reencode = new CellRecorder(streams);
      const inPasses = new CellRecorder(streams);
      for (let r = 0; r < workload.repeats; r++) {
        lockstep.add(await run(streams, "kv-cache", summarizeStep));
        if (reencodeToo) reencode.add(await run(streams, "re-encode", summarizeStep));
        if (summaryToo) inPasses.add(await run(streams, "kv-cache", summarizeStepInPasses));
      }
      const cell = lockstep.cell();
      out.lockstep.push(cell);
      log(`  engine ${workload.name} x${streams}: ${cell.tokensPerSecond.median.toFixed(1)} tokens/s`);
      if (reencodeToo) {
        const naive = reencode.cell();
        out.reencode.push({ streams, kvCache: cell, reencode: naive, speedup: ratio(cell.tokensPerSecond, naive.tokensPerSecond) });
        log(`  engine ${workload.name} x${streams} re-encoding the amateur: ${naive.tokensPerSecond.median.toFixed(1)} tokens/s`);
      }
      if (summaryToo) {
        const before = inPasses.cell();
        out.summary.push({ streams, inPasses: before, singlePass: cell, speedup: ratio(cell.tokensPerSecond, before.tokensPerSecond) });
        log(`  engine ${workload.name} x${streams} with the multi-pass summary: ${before.tokensPerSecond.median.toFixed(1)} tokens/s`);
      }
    }
  } finally {
    await Promise.all([expert.release(), amateur.release()]);
  }
  return out;
}

async function serviceCells(workload: PairWorkload, prepared: PreparedPair, prompts: number[][], settings: BenchSettings, log: (line: string) => void): Promise<PairSampling["service"]> {
  if (workload.serviceStreams.length === 0) return null;
  const most = Math.max(...workload.serviceStreams);
  const measured = await servedRuns(workload, prepared, prompts, settings, workload.serviceStreams, undefined, log);
  // The same largest cell once more on a service that does not gather its batches.
  const ungathered = await servedRuns(workload, prepared, prompts, settings, [most], 0, log);
  const gathered = measured.cells.find((c) => c.streams === most)!;
  const gather = { streams: most, without: ungathered.cells[0], with: gathered, speedup: ratio(gathered.decodeTokensPerSecond, ungathered.cells[0].decodeTokensPerSecond) };
  return { ...measured, gather };
}

async function servedRuns(
  workload: PairWorkload,
  prepared: PreparedPair,
  prompts: number[][],
  settings: BenchSettings,
  streamCounts: readonly number[],
  batchGatherMs: number | undefined,
  log: (line: string) => void,
): Promise<{ startSeconds: number; idleMemory: ProcessMemory; cells: ServedCell[] }> {
  const served = await serveInference({
    expertDir: prepared.expert.dir,
    amateurDir: prepared.amateur.dir,
    maxBatchSize: Math.max(...workload.serviceStreams),
    maxNewTokens: workload.newTokens,
    batchGatherMs,
  });
  const variant = batchGatherMs === 0 ? " (no batch gathering)" : "";
  try {
    const idleMemory = served.memory();
    const cells: ServedCell[] = [];
    const run = (streams: number, newTokens = workload.newTokens) =>
      runServiceTrajectories({ address: served.address, prompts: prompts.slice(0, streams), newTokens, alpha: settings.sampling.alpha, topK: settings.sampling.topK });
    for (const streams of streamCounts) {
      await run(streams, 2);
      const recorder = new CellRecorder(streams);
      const before = await batchSizeTotals(served.metricsPort, "expert");
      for (let r = 0; r < workload.repeats; r++) recorder.add(await run(streams));
      const after = await batchSizeTotals(served.metricsPort, "expert");
      const meanExpertBatch = (after.sum - before.sum) / Math.max(after.count - before.count, 1);
      const cell = { ...recorder.cell(), memory: served.memory(), meanExpertBatch };
      cells.push(cell);
      log(`  service${variant} ${workload.name} x${streams}: ${cell.tokensPerSecond.median.toFixed(1)} tokens/s, ${meanExpertBatch.toFixed(1)} sequences per expert pass`);
    }
    return { startSeconds: served.startSeconds, idleMemory, cells };
  } finally {
    await served.stop();
  }
}

export async function runSampling(settings: BenchSettings, log: (line: string) => void): Promise<SamplingResult> {
  const pairs: PairSampling[] = [];
  for (const workload of settings.sampling.pairs) {
    const prepared = await preparePair(workload.recipe, settings.cacheDir, log);
    const prompts = promptsFor(workload, prepared, Math.max(...workload.streams, ...workload.serviceStreams), settings.cacheDir);
    const lengths = prompts.map((p) => p.length);
    log(`sampling ${workload.name}: ${prepared.expert.parameters.toLocaleString("en-US")} + ${prepared.amateur.parameters.toLocaleString("en-US")} parameters`);
    const engine = await engineCells(workload, prepared, prompts, settings, log);
    const service = await serviceCells(workload, prepared, prompts, settings, log);
    pairs.push({
      pair: pairInfo(prepared),
      workload: {
        name: workload.name,
        prompts: workload.prompts === "world" ? "built-in world test questions as chat prompts" : `${workload.prompts} random token ids`,
        promptTokens: { min: Math.min(...lengths), max: Math.max(...lengths) },
        newTokens: workload.newTokens,
        repeats: workload.repeats,
      },
      engine,
      service,
    });
  }
  return { how: SAMPLING_HOW, alpha: settings.sampling.alpha, topK: settings.sampling.topK, pairs };
}
