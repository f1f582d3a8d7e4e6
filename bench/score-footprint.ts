// What one Score call costs the inference service as a user starts it: the call's wall time,
// the service's peak resident memory before and after it, and the longest its event loop was
// held meanwhile (the service's own nodejs_eventloop_lag_max_seconds). A random sequence of
// --tokens ids, distributions reported from --first on (SPARSE, alpha 0.1); the service's
// --max-new-tokens is set so that the sequence is within what Score accepts.
//   npx tsx bench/score-footprint.ts <expertDir> <amateurDir> [--tokens 1024] [--first 1] [--prefill-batch-tokens <n>]
import { join } from "node:path";
import { DistributionEncoding } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { InferenceService } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { createClient } from "#core/grpc/adapter.ts";
import { readModelConfig } from "#core/model/config.ts";
import { DEFAULT_LIMITS } from "#inference/server/limits.ts";
import { serveInference, withEventLoopHold } from "./processes.ts";
import { option, prefillBatchTokensOption } from "./script-option.ts";
import { randomPrompts } from "./workloads.ts";

const MIB = 2 ** 20;

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const [expertDir, amateurDir] = args;
  if (!expertDir || !amateurDir || expertDir.startsWith("--")) throw new Error("usage: score-footprint.ts <expertDir> <amateurDir> [--tokens 1024] [--first 1] [--prefill-batch-tokens <n>]");
  const tokens = Number(option(args, "--tokens", "1024"));
  const first = Number(option(args, "--first", "1"));
  if (!(Number.isInteger(tokens) && tokens > 0 && Number.isInteger(first) && first >= 1 && first <= tokens)) throw new Error("--tokens needs a positive integer and --first one in [1, tokens]");
  const prefillBatchTokens = prefillBatchTokensOption(args);
  const [ids] = randomPrompts(readModelConfig(join(expertDir, "config.json")).vocabSize, 1, tokens, 23);
  const maxNewTokens = Math.max(1, tokens - DEFAULT_LIMITS.maxPromptTokens);
  const served = await serveInference({ expertDir, amateurDir, maxBatchSize: 16, maxNewTokens, prefillBatchTokens });
  const client = createClient(InferenceService, served.address);
  try {
    const idle = served.memory();
    const started = performance.now();
    const { result: positions, eventLoopHoldSeconds } = await withEventLoopHold(served.metricsPort, async () => {
      let count = 0;
      const call = client.score({ prompt: { source: { case: "tokenIds", value: { ids } } }, firstPosition: first, distributions: { encoding: DistributionEncoding.SPARSE, alpha: 0.1 } });
      for await (const message of call) if (message.event.case === "position") count++;
      return count;
    });
    const seconds = (performance.now() - started) / 1000;
    const after = served.memory();
    console.log(
      JSON.stringify(
        { tokens, first, positions, seconds: +seconds.toFixed(1), idlePeakMiB: Math.round(idle.peakRssBytes / MIB), peakMiB: Math.round(after.peakRssBytes / MIB), eventLoopHoldMs: Math.round(eventLoopHoldSeconds * 1000) },
        null,
        1,
      ),
    );
  } finally {
    client.close();
    await served.stop();
  }
}

await main();
