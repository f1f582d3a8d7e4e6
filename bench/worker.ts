// `lightreasoner bench-worker <task> <json>`: the benchmark's helper processes. Each prints
// one JSON line on stdout: {"result": ..., "memory": {peakRssBytes, rssBytes}} when a
// one-shot task ends (its own peak memory read last), {"ready": ...} when a server task is
// listening, or {"error": "..."} when it fails.
import { processMemory } from "#core/metrics/process-memory.ts";
import { runTransportPeer } from "./transport-peer.ts";
import type { TransportPeerInput } from "./transport-peer.ts";
import { loraWorker, pretrainWorker } from "./training.ts";
import type { TrainingWorkerInput } from "./training.ts";
import { BenchInputError } from "./stats.ts";

export const WORKER_TASKS = ["transport-peer", "lora", "pretrain"] as const;

const print = (line: unknown): void => {
  process.stdout.write(`${JSON.stringify(line)}\n`);
};

export async function runBenchWorker(task: string, inputJson: string): Promise<void> {
  let input: unknown;
  try {
    input = JSON.parse(inputJson);
  } catch (err) {
    throw new BenchInputError("input", `is not JSON: ${(err as Error).message}`);
  }
  try {
    switch (task) {
      case "transport-peer":
        return await runTransportPeer(input as TransportPeerInput, print);
      case "lora":
        return print({ result: await loraWorker(input as TrainingWorkerInput), memory: processMemory(process.pid) });
      case "pretrain":
        return print({ result: await pretrainWorker(input as TrainingWorkerInput), memory: processMemory(process.pid) });
      default:
        throw new BenchInputError("task", `${JSON.stringify(task)} is not one of ${WORKER_TASKS.join(", ")}`);
    }
  } catch (err) {
    print({ error: (err as Error).stack ?? String(err) });
    throw err;
  }
}
