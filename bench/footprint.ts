// The inference service's footprint at a given pair, as a user starts it: seconds from spawn
// until it listens, resident memory once idle (both models loaded) against the weights'
// float32 bytes, and the growth of the peak per extra concurrent stream against that
// stream's KV cache. Run it on its own (the 0.5B-shaped pair takes ~2.5 GB and minutes):
// Start-up is also given as the CPU seconds the service used until it listened, all threads
// and the main thread alone (which holds up on a busy machine where wall time does not), and
// as the service's own log lines until then, each with its time since spawn (one per stage).
// With --prepacked-cache <dir> every start passes it to the service: the first start writes the
// entries, the later ones read them (so give --starts 2 or more). The weights are then file
// pages that fault in at the first step: idle resident memory is low until then, and the peak
// at the first stream count is what to hold against the weights. Each stream count also
// gives the longest the service's event loop was held while serving it (a model step holds
// it); --prefill-batch-tokens <n> passes the service's prefill budget, which bounds the
// longest prefill step. --temperature <t> has the trajectories sample at t instead of greedily.
//   npx tsx bench/footprint.ts <expertDir> <amateurDir> [--streams 1,8] [--prompt 64] [--new 32] [--starts 2] [--prepacked-cache <dir>] [--prefill-batch-tokens <n>] [--temperature <t>]
import { statSync } from "node:fs";
import { join } from "node:path";
import { readModelConfig } from "#core/model/config.ts";
import { kvCacheBytes } from "./memory.ts";
import { processCpuSeconds, serveInference, withEventLoopHold } from "./processes.ts";
import { runServiceTrajectories } from "./trajectory-client.ts";
import { option, prefillBatchTokensOption } from "./script-option.ts";

const MIB = 2 ** 20;

/** float32 bytes of the weights, from the safetensors files' sizes (headers are a few KiB). */
function weightBytes(dir: string): number {
  return statSync(join(dir, "model.safetensors")).size;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const [expertDir, amateurDir] = args;
  if (!expertDir || !amateurDir || expertDir.startsWith("--")) throw new Error("usage: footprint.ts <expertDir> <amateurDir> [--streams 1,8] [--prompt 64] [--new 32] [--starts 2] [--prepacked-cache <dir>]");
  const streams = option(args, "--streams", "1,8").split(",").map(Number);
  const promptTokens = Number(option(args, "--prompt", "64"));
  const newTokens = Number(option(args, "--new", "32"));
  const starts = Number(option(args, "--starts", "2"));
  const prepackedCacheDir = args.includes("--prepacked-cache") ? option(args, "--prepacked-cache", "") : undefined;
  if (prepackedCacheDir === "") throw new Error("--prepacked-cache needs a folder");
  const prefillBatchTokens = prefillBatchTokensOption(args);
  const temperature = Number(option(args, "--temperature", "0"));
  if (!(Number.isFinite(temperature) && temperature >= 0)) throw new Error(`--temperature must be a finite number >= 0, got ${option(args, "--temperature", "")}`);
  const configs = [readModelConfig(join(expertDir, "config.json")), readModelConfig(join(amateurDir, "config.json"))];
  const weights = weightBytes(expertDir) + weightBytes(amateurDir);
  const vocab = configs[0].vocabSize;
  let seed = 17;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const prompts = Array.from({ length: Math.max(...streams) }, () => Array.from({ length: promptTokens }, () => Math.floor(random() * Math.min(vocab, 100_000))));

  // Earlier starts warm the page cache; the last one is measured.
  const startSeconds: number[] = [];
  for (let i = 0; i < starts - 1; i++) {
    const warm = await serveInference({ expertDir, amateurDir, maxBatchSize: Math.max(...streams), maxNewTokens: newTokens, prepackedCacheDir, prefillBatchTokens });
    startSeconds.push(warm.startSeconds);
    await warm.stop();
  }
  const served = await serveInference({ expertDir, amateurDir, maxBatchSize: Math.max(...streams), maxNewTokens: newTokens, prepackedCacheDir, prefillBatchTokens });
  startSeconds.push(served.startSeconds);
  try {
    // CPU time is what start-up costs on a machine shared with other work, where wall time is not.
    const startCpuSeconds = processCpuSeconds(served.pid);
    // The main thread builds the graphs, runs ONNX Runtime's prepacking and the tokenizer: on an
    // idle machine it sets the time to listening, whatever other threads do beside it.
    const startMainThreadCpuSeconds = processCpuSeconds(served.pid, true);
    const idle = served.memory();
    const rows: { streams: number; peak: number; msPerStep: number; eventLoopHoldMs: number }[] = [];
    for (const n of streams) {
      const { result: run, eventLoopHoldSeconds } = await withEventLoopHold(served.metricsPort, () =>
        runServiceTrajectories({ address: served.address, prompts: prompts.slice(0, n), newTokens, alpha: 0.1, topK: 20, temperature }),
      );
      rows.push({ streams: n, peak: served.memory().peakRssBytes, msPerStep: (run.seconds * 1000) / newTokens, eventLoopHoldMs: eventLoopHoldSeconds * 1000 });
    }
    const first = rows[0];
    const last = rows[rows.length - 1];
    const perStream = last.streams > first.streams ? (last.peak - first.peak) / (last.streams - first.streams) : null;
    const kv = kvCacheBytes(configs, promptTokens + newTokens);
    console.log(
      JSON.stringify(
        {
          expertDir,
          amateurDir,
          startSeconds: startSeconds.map((s) => Number(s.toFixed(2))),
          startCpuSeconds,
          startMainThreadCpuSeconds,
          startLog: served.startLog.map((l) => `${l.seconds.toFixed(2)} s  ${l.msg}`),
          weightsMiB: Math.round(weights / MIB),
          idleRssMiB: Math.round(idle.rssBytes / MIB),
          idlePeakMiB: Math.round(idle.peakRssBytes / MIB),
          idleOverWeights: Number((idle.rssBytes / weights).toFixed(2)),
          prepackedCacheDir: prepackedCacheDir ?? null,
          prefillBatchTokens: prefillBatchTokens ?? null,
          temperature,
          firstPeakOverWeights: Number((first.peak / weights).toFixed(2)),
          byStreams: rows.map((r) => ({ streams: r.streams, peakMiB: Math.round(r.peak / MIB), wallMsPerStep: Number(r.msPerStep.toFixed(1)), eventLoopHoldMs: Math.round(r.eventLoopHoldMs) })),
          perExtraStreamMiB: perStream === null ? null : Number((perStream / MIB).toFixed(2)),
          kvCachePerStreamMiB: Number((kv / MIB).toFixed(2)),
        },
        null,
        1,
      ),
    );
  } finally {
    await served.stop();
  }
}

await main();
