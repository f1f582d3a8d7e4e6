// Section "memory": peak resident memory (VmHWM) of the inference service per model size and
// per concurrent stream, and of the trainer's processes. The service runs as users run it
// (`lightreasoner serve inference`); its peak is read once it listens (idle: both models
// loaded) and after each stream count's trajectories, in increasing order, so each reading
// is the peak of serving up to that many streams, always at the section's own trajectory
// length (the method's 64 + 128 tokens), never borrowed from the sampling section's shorter
// runs: a stream's cost grows with its length, and the goal is about real trajectories. Beside
// the growth per extra stream stands what that stream's KV cache holds (both models, float32, at
// its prompt + new tokens), so the goal "per extra stream <= its KV cache + 5 MiB" is checked
// on the same figures.
import type { ModelConfig } from "#core/model/config.ts";
import { kvValuesPerPosition } from "./flops.ts";
import { preparePair } from "./models.ts";
import type { ProcessMemory } from "#core/metrics/process-memory.ts";
import { serveInference, withEventLoopHold } from "./processes.ts";
import type { PairInfo } from "./sampling.ts";
import { pairInfo } from "./sampling.ts";
import type { PairRecipe } from "./models.ts";
import type { BenchSettings } from "./settings.ts";
import { runServiceTrajectories } from "./trajectory-client.ts";
import type { TrainingResult } from "./training.ts";
import { randomPrompts } from "./workloads.ts";

export interface ServiceMemory {
  pair: Pick<PairInfo, "name" | "expertParameters" | "amateurParameters" | "vocabSize">;
  /** The longest prompt of the trajectories, in tokens. */
  promptTokens: number;
  newTokens: number;
  /** One stream's keys and values in both models at promptTokens + newTokens positions. */
  kvCachePerStreamBytes: number;
  idle: ProcessMemory;
  /** After each stream count's trajectories: the peak so far, and the longest the event loop was held while serving them (s). */
  byStreams: { streams: number; memory: ProcessMemory; eventLoopHoldSeconds: number }[];
  /** (peak at the most streams - peak at the fewest) / (difference in streams). */
  perExtraStreamBytes: number | null;
  /** The same slope of the pages mapped from the weight files (ProcessMemory.fileRssBytes), part of the peak. */
  perExtraStreamFileBytes: number | null;
  /** Once the most streams are done, after one more stream: what the service keeps after a burst (rssBytes). */
  afterwards: ProcessMemory;
}

export interface TrainerMemory {
  what: string;
  peakRssBytes: number;
}

export interface MemoryResult {
  how: string;
  inference: ServiceMemory[];
  trainer: TrainerMemory[];
}

export const MEMORY_HOW =
  "VmHWM from /proc/<pid>/status of `lightreasoner serve inference` child processes (CPU provider, default threads), read when " +
  "it listens and after the trajectories of each stream count (random prompts), then VmRSS after one more stream; RssFile beside it: pages mapped from the weight files (the embedding rows of the tokens seen); " +
  "the longest event-loop hold while serving each stream count: the service's nodejs_eventloop_lag_max_seconds, scraped (and so reset) before and read after; " +
  "trainer: VmHWM of the training section's child processes";

/** One stream's KV cache in both models after `tokens` positions, float32 (the service's KV type). */
export function kvCacheBytes(configs: readonly Pick<ModelConfig, "numLayers" | "numKvHeads" | "headDim">[], tokens: number): number {
  return configs.reduce((n, c) => n + kvValuesPerPosition(c) * 4 * tokens, 0);
}

/** Growth per added stream of one reading (default the peak) between the fewest and the most streams measured. */
export function perExtraStream(byStreams: { streams: number; memory: ProcessMemory }[], reading: (m: ProcessMemory) => number = (m) => m.peakRssBytes): number | null {
  if (byStreams.length < 2) return null;
  const first = byStreams[0];
  const last = byStreams[byStreams.length - 1];
  if (last.streams === first.streams) return null;
  return (reading(last.memory) - reading(first.memory)) / (last.streams - first.streams);
}

const slopes = (byStreams: { streams: number; memory: ProcessMemory }[]) => ({
  perExtraStreamBytes: perExtraStream(byStreams),
  perExtraStreamFileBytes: perExtraStream(byStreams, (m) => m.fileRssBytes),
});

async function measureService(settings: BenchSettings, recipe: PairRecipe, log: (line: string) => void): Promise<ServiceMemory> {
  const prepared = await preparePair(recipe, settings.cacheDir, log);
  const streams = settings.memory.streams;
  const { promptTokens, newTokens } = settings.memory;
  // Random prompts of one length on every pair, so each stream holds exactly the positions its KV figure counts.
  const prompts = randomPrompts(prepared.expert.config.vocabSize, Math.max(...streams), promptTokens, 17);
  const served = await serveInference({ expertDir: prepared.expert.dir, amateurDir: prepared.amateur.dir, maxBatchSize: Math.max(...streams), maxNewTokens: newTokens });
  try {
    const idle = served.memory();
    const byStreams = [];
    const serve = (count: number) => runServiceTrajectories({ address: served.address, prompts: prompts.slice(0, count), newTokens, alpha: settings.sampling.alpha, topK: settings.sampling.topK });
    for (const n of streams) {
      const { eventLoopHoldSeconds } = await withEventLoopHold(served.metricsPort, () => serve(n));
      byStreams.push({ streams: n, memory: served.memory(), eventLoopHoldSeconds });
    }
    // One stream after the burst: its step regroups the batch's KV buffers down to its row.
    await serve(1);
    const afterwards = served.memory();
    const kvCachePerStreamBytes = kvCacheBytes([prepared.expert.config, prepared.amateur.config], promptTokens + newTokens);
    return { pair: pairInfo(prepared), promptTokens, newTokens, kvCachePerStreamBytes, idle, byStreams, ...slopes(byStreams), afterwards };
  } finally {
    await served.stop();
  }
}

export async function runMemory(settings: BenchSettings, log: (line: string) => void, training?: TrainingResult): Promise<MemoryResult> {
  const inference: ServiceMemory[] = [];
  for (const recipe of settings.memory.pairs) {
    inference.push(await measureService(settings, recipe, log));
    const last = inference[inference.length - 1];
    const peak = last.byStreams[last.byStreams.length - 1]?.memory.peakRssBytes ?? last.idle.peakRssBytes;
    const mapped = last.perExtraStreamFileBytes ?? 0;
    const perStream = last.perExtraStreamBytes === null ? "-" : `${(last.perExtraStreamBytes / 2 ** 20).toFixed(1)} (mapped weight pages ${(mapped / 2 ** 20).toFixed(1)}, allocated ${((last.perExtraStreamBytes - mapped) / 2 ** 20).toFixed(1)})`;
    log(
      `  inference ${last.pair.name}: idle ${(last.idle.peakRssBytes / 2 ** 20).toFixed(0)} MiB, peak ${(peak / 2 ** 20).toFixed(0)} MiB, ` +
        `per extra stream ${perStream} MiB (its KV cache at ${last.promptTokens} + ${last.newTokens} tokens: ${(last.kvCachePerStreamBytes / 2 ** 20).toFixed(2)} MiB)`,
    );
  }
  const trainer = training ? [training.lora, training.pretrain].map((run) => ({ what: run.what, peakRssBytes: run.memory.peakRssBytes })) : [];
  return { how: MEMORY_HOW, inference, trainer };
}
