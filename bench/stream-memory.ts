// Where a concurrent stream's memory goes in the inference runtime, measured in one process:
// N streams of a prompt and new tokens through both models as the scheduler steps them (one
// prefill of every prompt, then one token per step, the batch unchanged), then the peak
// resident set (VmHWM) beside the bytes each part holds at the end: the sequences' own KV
// caches (their capacity), the sessions' batch buffers (batch-kv.ts), what the KV actually
// holds, and the pages mapped from the weight files (RssFile: the embedding rows of the token
// ids seen). The growth per extra stream between the fewest and the most streams is split the
// same way; the rest is ONNX Runtime (its arena for the largest step's activations) and
// JavaScript garbage not yet collected (each step's log-probabilities, replaced buffers).
// --prefill-group N prefills the prompts N at a time (default all at once, as the scheduler
// does with the sequences admitted together), to show what the largest step leaves in ONNX
// Runtime's arena. --gc-every-step collects garbage after every step (needs --expose-gc), so
// the rest's difference from a run without it is the garbage.
//   npx tsx --expose-gc bench/stream-memory.ts <expertDir> <amateurDir> [--streams 1,16,64] [--prompt 64] [--new 128] [--prefill-group N] [--gc-every-step]
import { join } from "node:path";
import { readModelConfig } from "#core/model/config.ts";
import type { CausalLmSession } from "#inference/model/session.ts";
import type { KvCache } from "#inference/model/kv-cache.ts";
import { openServedSession, stepInGroups } from "./engine-lockstep.ts";
import { kvCacheBytes } from "./memory.ts";
import { processMemory } from "#core/metrics/process-memory.ts";
import { randomPrompts } from "./workloads.ts";
import { option } from "./script-option.ts";

const MIB = 2 ** 20;

interface Reading {
  streams: number;
  peak: number;
  rss: number;
  fileRss: number;
  arrayBuffers: number;
  caches: number;
  batchBuffers: number;
  held: number;
  msPerStep: number;
}

/** Both models over `prompts` then `newTokens - 1` single tokens, one batch throughout; the readings taken before the caches are dropped. */
async function run(models: CausalLmSession[], prompts: number[][], continuations: number[][], held: number, prefillGroup: number, gcEveryStep: boolean): Promise<Reading> {
  const caches: KvCache[][] = models.map((m) => prompts.map(() => m.newCache()));
  const step = (tokens: (b: number) => number[], group = prompts.length) =>
    Promise.all(models.map((m, i) => stepInGroups(m, prompts.map((_, b) => ({ cache: caches[i][b], tokens: tokens(b) })), group)));
  await step((b) => prompts[b], prefillGroup);
  const started = performance.now();
  for (let t = 0; t < continuations[0].length; t++) {
    await step((b) => [continuations[b][t]]);
    if (gcEveryStep) (globalThis as { gc?: () => void }).gc?.();
  }
  const msPerStep = (performance.now() - started) / Math.max(1, continuations[0].length);
  const memory = processMemory(process.pid);
  const reading: Reading = {
    streams: prompts.length,
    peak: memory.peakRssBytes,
    rss: memory.rssBytes,
    fileRss: memory.fileRssBytes,
    arrayBuffers: process.memoryUsage().arrayBuffers,
    caches: caches.flat().reduce((n, c) => n + c.allocatedBytes, 0),
    batchBuffers: models.reduce((n, m) => n + m.batchKvBytes, 0),
    held: held * prompts.length,
    msPerStep,
  };
  for (const c of caches.flat()) c.discard();
  return reading;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const [expertDir, amateurDir] = args;
  if (!expertDir || !amateurDir || expertDir.startsWith("--")) throw new Error("usage: stream-memory.ts <expertDir> <amateurDir> [--streams 1,16,64] [--prompt 64] [--new 128] [--prefill-group N]");
  const streams = option(args, "--streams", "1,16,64").split(",").map(Number);
  const promptTokens = Number(option(args, "--prompt", "64"));
  const newTokens = Number(option(args, "--new", "128"));
  const prefillGroup = Number(option(args, "--prefill-group", "0"));
  const gcEveryStep = args.includes("--gc-every-step");
  const configs = [expertDir, amateurDir].map((dir) => readModelConfig(join(dir, "config.json")));
  // The last token is chosen, never fed: prompt + new - 1 positions are cached at the end.
  const held = kvCacheBytes(configs, promptTokens + newTokens - 1);
  const models = [await openServedSession(expertDir, "expert"), await openServedSession(amateurDir, "amateur")];
  const gc = (globalThis as { gc?: () => void }).gc;
  const readings: Reading[] = [];
  try {
    for (const n of streams) {
      const prompts = randomPrompts(configs[0].vocabSize, n, promptTokens, 17);
      const continuations = randomPrompts(configs[0].vocabSize, n, newTokens - 1, 19);
      readings.push(await run(models, prompts, continuations, held, prefillGroup > 0 ? prefillGroup : n, gcEveryStep));
      gc?.();
    }
  } finally {
    await Promise.all(models.map((m) => m.release()));
  }
  const mib = (bytes: number) => Number((bytes / MIB).toFixed(2));
  const first = readings[0];
  const last = readings[readings.length - 1];
  const perStream = (pick: (r: Reading) => number) => (last.streams > first.streams ? mib((pick(last) - pick(first)) / (last.streams - first.streams)) : null);
  console.log(
    JSON.stringify(
      {
        promptTokens,
        newTokens,
        prefillGroup: prefillGroup > 0 ? prefillGroup : "all",
        gcBetweenRuns: gc !== undefined,
        byStreams: readings.map((r) => ({
          streams: r.streams,
          peakMiB: mib(r.peak),
          rssMiB: mib(r.rss),
          fileRssMiB: mib(r.fileRss),
          arrayBuffersMiB: mib(r.arrayBuffers),
          cachesMiB: mib(r.caches),
          batchBuffersMiB: mib(r.batchBuffers),
          heldKvMiB: mib(r.held),
          msPerStep: Number(r.msPerStep.toFixed(1)),
        })),
        perExtraStreamMiB: {
          peak: perStream((r) => r.peak),
          caches: perStream((r) => r.caches),
          batchBuffers: perStream((r) => r.batchBuffers),
          heldKv: perStream((r) => r.held),
          mappedWeightPages: perStream((r) => r.fileRss),
          rest: perStream((r) => r.peak - r.caches - r.batchBuffers - r.fileRss),
        },
      },
      null,
      1,
    ),
  );
}

await main();
