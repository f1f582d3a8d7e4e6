// Shared pieces of the trainer service's tests: a trainer on loopback beside a real inference
// server, run configs small enough for the tiny random pair, and a WatchRun collector.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { createClient } from "#core/grpc/adapter.ts";
import type { ServiceClient } from "#core/grpc/adapter.ts";
import { RunMode, RunState, TrainerService } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import type { Run, RunConfigSchema, WatchRunResponse } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import { expect } from "vitest";
import { startTrainerServer } from "#trainer/main.ts";
import type { TrainerServer } from "#trainer/main.ts";
import { silentLogger } from "#test/inference/helpers.ts";

/** A RunConfig written as a plain object (not a message instance). */
export type RunConfigInit = Exclude<MessageInitShape<typeof RunConfigSchema>, { $typeName: string }>;

export type TrainerClient = ServiceClient<(typeof TrainerService)["method"]>;

export async function startTrainer(
  expertDir: string,
  inference: string[],
  runsDir: string,
  allowedInference: string[] = [],
): Promise<{ server: TrainerServer; client: TrainerClient; close(): Promise<void> }> {
  const server = await startTrainerServer({ expertDir, inferenceTargets: inference, allowedInferenceTargets: allowedInference, runsDir, host: "127.0.0.1", port: 0, metricsPort: 0, connectTimeoutMs: 2000, logger: silentLogger(), access: { allowUnauthenticated: true } });
  const client = createClient(TrainerService, server.address);
  return {
    server,
    client,
    close: async () => {
      client.close();
      await server.close();
    },
  };
}

/**
 * A run the tiny random pair finishes in a few seconds. Its KLs are large (random models), so
 * beta 3.3 keeps about half the steps; sampled (temperature 1) so trajectories differ.
 */
export function smallRun(problemsFile: string, overrides: RunConfigInit = {}): RunConfigInit {
  return {
    mode: RunMode.OFFLINE,
    problems: { path: problemsFile },
    sampling: { params: { temperature: 1, maxNewTokens: 16 }, concurrency: 4 },
    selection: { beta: 3.3 },
    optimization: { learningRate: 5e-2, batchSize: 4, gradientAccumulation: 1, maxSteps: 6, checkpointEverySteps: 2 },
    seed: 21,
    ...overrides,
  };
}

/**
 * Optimizer steps an online run cannot finish before its first pass over `problems` is over:
 * each trajectory gives at most `maxNewTokens` selected steps, each optimizer step takes
 * `batchSize` of them, and the first pass waits for every problem in list order. An online
 * run stops sampling when training is done, so with fewer steps how many problems it samples
 * depends on how sampling and training interleave on the replica.
 */
export function stepsBeyondFirstPass(problems: number, maxNewTokens: number, batchSize: number): number {
  return Math.floor((problems * maxNewTokens) / batchSize) + 1;
}

/** Starts a run, waits for it to end, and returns it; fails the test unless it SUCCEEDED. */
export async function runToSuccess(client: TrainerClient, runId: string, config: RunConfigInit): Promise<Run> {
  await client.startRun({ runId, config });
  const state = await finished(client, runId);
  const { run } = await client.getRun({ runId });
  expect(state, run?.error).toBe(RunState.SUCCEEDED);
  return run!;
}

/** Every event of a WatchRun call until the stream ends. */
export async function watchAll(client: TrainerClient, runId: string): Promise<WatchRunResponse[]> {
  const events: WatchRunResponse[] = [];
  for await (const event of client.watchRun({ runId })) events.push(event);
  return events;
}

/** Waits until the run is over and returns its final state. */
export async function finished(client: TrainerClient, runId: string): Promise<RunState> {
  const events = await watchAll(client, runId);
  const last = events.at(-1)?.event;
  if (last?.case !== "finished") throw new Error(`WatchRun ended with ${last?.case ?? "nothing"}`);
  return last.value.state;
}

/** Waits for the first event that satisfies `until`, then returns (the watch is left). */
export async function waitFor(client: TrainerClient, runId: string, until: (event: WatchRunResponse) => boolean): Promise<void> {
  for await (const event of client.watchRun({ runId })) if (until(event)) return;
  throw new Error(`run ${runId} ended before the awaited event`);
}

/** The trainer's /metrics, scraped as Prometheus does: each series as exposed (`name{label="value"}`) and its value. */
export async function scrapeMetrics(server: TrainerServer): Promise<Map<string, number>> {
  const response = await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`);
  expect(response.status).toBe(200);
  const series = new Map<string, number>();
  for (const line of (await response.text()).split("\n")) {
    const sample = /^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (sample) series.set(sample[1], Number(sample[2]));
  }
  return series;
}

/** The run ids that have a series of this metric, sorted. */
export function runsWithSeries(series: Map<string, number>, metric: string): string[] {
  const runs: string[] = [];
  for (const name of series.keys()) {
    const labelled = new RegExp(`^${metric}\\{run="([^"]+)"\\}$`).exec(name);
    if (labelled) runs.push(labelled[1]);
  }
  return runs.sort();
}

export { RunState };
