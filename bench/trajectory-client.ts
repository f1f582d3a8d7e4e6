// The trainer's side of StreamTrajectories, reduced to what the benchmark times: N trajectories
// started together on ONE call (as the trainer's sampler multiplexes them), the expert writing
// greedily (or sampling at a temperature, as the SFT baseline's attempts do), SPARSE
// distributions with the trainer's defaults, every message read and counted.
import { createClient } from "#core/grpc/adapter.ts";
import { DistributionEncoding, FinishReason } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { InferenceService } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import type { RunTiming } from "./engine-lockstep.ts";
import { BenchProcessError } from "./processes.ts";

export interface ServiceRunOptions {
  address: string;
  prompts: readonly (readonly number[])[];
  newTokens: number;
  alpha: number;
  topK: number;
  /** 0 (default): greedy; above: sampled at that temperature, seeded per trajectory. */
  temperature?: number;
}

/** Runs the prompts as concurrent trajectories and times them; fails on any trajectory error. */
export async function runServiceTrajectories(options: ServiceRunOptions): Promise<RunTiming> {
  const { address, prompts, newTokens, alpha, topK, temperature = 0 } = options;
  const client = createClient(InferenceService, address);
  try {
    const started = performance.now();
    const call = client.streamTrajectories();
    const firstStep = new Set<string>();
    let firstTokenAt = 0;
    let tokens = 0;
    let finished = 0;
    const reading = (async () => {
      for await (const message of call) {
        const event = message.event;
        if (event.case === "step") {
          tokens++;
          if (!firstStep.has(message.requestId)) {
            firstStep.add(message.requestId);
            if (firstStep.size === prompts.length) firstTokenAt = performance.now();
          }
        } else if (event.case === "finished") {
          const f = event.value;
          if (f.end?.finishReason === FinishReason.ERROR) throw new BenchProcessError(`trajectory ${message.requestId} failed: ${f.error?.message ?? "unknown error"}`);
          // Half-close only now: a call half-closed earlier can end before the server has
          // handed over its last messages when several trajectories finish in one step
          // (server/trajectories.ts resolves `done` before its final post is written).
          if (++finished === prompts.length) call.end();
        }
      }
    })();
    // A failure is reported by the await below, not as an unhandled rejection meanwhile.
    reading.catch(() => {});
    for (let i = 0; i < prompts.length; i++) {
      await call.write({
        requestId: `t${i}`,
        action: {
          case: "start",
          value: {
            prompt: { source: { case: "tokenIds", value: { ids: [...prompts[i]] } } },
            sampling: { temperature, maxNewTokens: newTokens, seed: i },
            distributions: { encoding: DistributionEncoding.SPARSE, alpha, topK },
          },
        },
      });
    }
    await reading;
    const ended = performance.now();
    if (finished !== prompts.length) throw new BenchProcessError(`${finished} of ${prompts.length} trajectories finished`);
    return { tokens, streams: prompts.length, seconds: (ended - started) / 1000, firstTokenSeconds: ((firstTokenAt || ended) - started) / 1000 };
  } finally {
    client.close();
  }
}
