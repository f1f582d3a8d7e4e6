// The trainer's per-run gauges over a real /metrics scrape, with a real trainer and inference
// server on loopback: two runs in flight at once are two series of each per-run gauge (one
// unlabelled gauge would hold whichever run wrote last), each with that run's own value; a
// run that stops loses its last-progress series (so the stall alert never watches a run that
// is over and the series do not pile up) but keeps its final selection ratio, and a resumed
// run gets the series back at once.
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { WatchRunResponse } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import type { InferenceServer } from "#inference/main.ts";
import { startServer, writeTinyPair } from "#test/inference/helpers.ts";
import type { TinyPair } from "#test/inference/helpers.ts";
import { writeProblems } from "#test/trainer-sampling/helpers.ts";
import { RunState, runsWithSeries, scrapeMetrics, smallRun, startTrainer, waitFor } from "./helpers.ts";
import type { RunConfigInit } from "./helpers.ts";

const SELECTION_RATIO = "lightreasoner_trainer_selection_ratio";
const LAST_PROGRESS = "lightreasoner_trainer_last_progress_timestamp_seconds";

describe("the trainer's per-run gauges", () => {
  let pair: TinyPair;
  let inference: InferenceServer;
  let trainer: Awaited<ReturnType<typeof startTrainer>>;
  // More problems than either run samples before the test cancels it: both stay in flight.
  // Different betas, so the two runs keep different shares of their steps.
  let runA: RunConfigInit;
  let runB: RunConfigInit;
  beforeAll(async () => {
    pair = writeTinyPair();
    inference = await startServer(pair);
    const problems = writeProblems(pair.root, 120).file;
    const sampling = { params: { temperature: 1, maxNewTokens: 16 }, concurrency: 1 };
    runA = smallRun(problems, { sampling, selection: { beta: 3.3 }, seed: 5 });
    runB = smallRun(problems, { sampling, selection: { beta: 2.5 }, seed: 6 });
    trainer = await startTrainer(pair.expertDir, [inference.address], join(pair.root, "runs"));
  });
  afterAll(async () => {
    await trainer?.close();
    await inference?.close(1000);
    pair?.remove();
  });

  it("shows two runs in flight as two series, each with its own run's value, and drops a stopped run's last progress", async () => {
    const { client, server } = trainer;
    await client.startRun({ runId: "run-a", config: runA });
    await client.startRun({ runId: "run-b", config: runB });
    const sampled = (n: number) => (e: WatchRunResponse) => e.event.case === "progress" && e.event.value.problemsSampled >= n;
    await Promise.all([waitFor(client, "run-a", sampled(3)), waitFor(client, "run-b", sampled(3))]);

    const during = await scrapeMetrics(server);
    expect(runsWithSeries(during, SELECTION_RATIO)).toEqual(["run-a", "run-b"]);
    expect(runsWithSeries(during, LAST_PROGRESS)).toEqual(["run-a", "run-b"]);
    for (const run of ["run-a", "run-b"]) expect(during.get(`${LAST_PROGRESS}{run="${run}"}`)).toBeGreaterThan(Date.now() / 1000 - 600);

    const { run: a } = await client.cancelRun({ runId: "run-a" });
    const { run: b } = await client.cancelRun({ runId: "run-b" });
    expect([a?.state, b?.state]).toEqual([RunState.CANCELLED, RunState.CANCELLED]);
    const after = await scrapeMetrics(server);
    // Each run's series holds its own final share, not the other run's.
    const ratioOf = (run: typeof a) => run!.counters!.stepsSelected / run!.counters!.stepsSeen;
    expect(after.get(`${SELECTION_RATIO}{run="run-a"}`)).toBeCloseTo(ratioOf(a), 12);
    expect(after.get(`${SELECTION_RATIO}{run="run-b"}`)).toBeCloseTo(ratioOf(b), 12);
    expect(ratioOf(a)).not.toBeCloseTo(ratioOf(b), 6);
    // Stopped runs make no progress: their last-progress series are gone.
    expect(runsWithSeries(after, LAST_PROGRESS)).toEqual([]);

    // A resumed run is running again, and progressing from the moment it is.
    await client.resumeRun({ runId: "run-a" });
    expect(runsWithSeries(await scrapeMetrics(server), LAST_PROGRESS)).toEqual(["run-a"]);
    await client.cancelRun({ runId: "run-a" });
    expect(runsWithSeries(await scrapeMetrics(server), LAST_PROGRESS)).toEqual([]);
  });
});
