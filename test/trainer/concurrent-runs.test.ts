// Two runs at once on one inference replica, training different adapters, while another
// client has its own adapter active there: each run samples, trains and evaluates as it did
// alone (the same trajectories token for token, greedy; the same adapters; the same verdicts,
// its "after" evaluation on its own adapter), because every request a run sends names its
// adapter and its pushes upload without activating. The adapters agree to float rounding,
// not bit for bit: the replica batches the two runs' trajectories together, and a batch of
// another shape rounds the distributions' last bits differently. Also: the replica's active
// adapter is still the other client's when both runs are done, and /metrics shows each run's
// own final selection ratio and loss as a series of its own.
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadModelDir } from "#core/formats/model-dir.ts";
import { readPeftAdapter } from "#core/formats/peft.ts";
import { RunMode, SamplingAdapter } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import type { Run } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import type { ModelConfig } from "#core/model/config.ts";
import type { InferenceServer } from "#inference/main.ts";
import { pushAdapter } from "#trainer/adapter-push.ts";
import { adapterWithNonZeroB, maxAdapterDiff } from "#trainer/model/testing/tiny-adapter.ts";
import { readRunRecord } from "#trainer/runs/run-record.ts";
import { SampleStore } from "#trainer/store/sample-store.ts";
import type { TrajectoryRecord } from "#trainer/store/records.ts";
import { clients, startServer, writeTinyPair } from "#test/inference/helpers.ts";
import type { TinyPair } from "#test/inference/helpers.ts";
import { expectSameSamples, writeProblems } from "#test/trainer-sampling/helpers.ts";
import { finished, RunState, runsWithSeries, runToSuccess, scrapeMetrics, smallRun, startTrainer, stepsBeyondFirstPass } from "./helpers.ts";
import type { RunConfigInit } from "./helpers.ts";

const trajectories = (run: Run) => SampleStore.read(join(run.runDir, "samples.jsonl")).records;
/** Each problem's trajectory, by problem (the store keeps them in the order they were finished, which depends on timing). */
const tokens = (records: TrajectoryRecord[]) =>
  records
    .map((r) => ({ problemId: r.problemId, prompt: r.promptTokenIds, completion: r.completionTokenIds, adapterVersion: r.adapterVersion }))
    .sort((a, b) => a.problemId.localeCompare(b.problemId));

describe("two runs at once on one replica", () => {
  let pair: TinyPair;
  let inference: InferenceServer;
  let trainer: Awaited<ReturnType<typeof startTrainer>>;
  let offline: RunConfigInit;
  let online: RunConfigInit;
  let expert: ModelConfig;
  beforeAll(async () => {
    pair = writeTinyPair();
    expert = loadModelDir(pair.expertDir).config;
    inference = await startServer(pair);
    const greedy = { params: { temperature: 0, maxNewTokens: 16 }, concurrency: 4 };
    const evalProblems = { path: writeProblems(pair.root, 4, 500).file };
    // Different problems, settings and adapter shapes, so the two runs train different adapters.
    offline = smallRun(writeProblems(pair.root, 16).file, { sampling: greedy, evalProblems, optimization: { learningRate: 5e-2, batchSize: 4, gradientAccumulation: 1, maxSteps: 6 }, seed: 3 });
    online = smallRun(writeProblems(pair.root, 16, 100).file, {
      mode: RunMode.ONLINE,
      sampling: { ...greedy, adapter: SamplingAdapter.BASE },
      evalProblems,
      lora: { rank: 4, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj"] },
      // More steps than a first pass over 16 problems can give, so the run samples all 16
      // however sampling and training interleave; in batches of 8, so that is 33 steps: over
      // 65 steps of 4 the two runs' float rounding grew to 1e-3 in the adapters.
      optimization: { learningRate: 2e-2, batchSize: 8, gradientAccumulation: 1, maxSteps: stepsBeyondFirstPass(16, 16, 8), pushEverySteps: 12 },
      seed: 4,
    });
    trainer = await startTrainer(pair.expertDir, [inference.address], join(pair.root, "runs"));
  });
  afterAll(async () => {
    await trainer?.close();
    await inference?.close(1000);
    pair?.remove();
  });

  const alone = (runId: string, config: RunConfigInit) => runToSuccess(trainer.client, runId, config);

  it("each run samples, trains and evaluates as it does alone, and the replica keeps serving its other client's adapter", async () => {
    const offlineAlone = await alone("offline-alone", offline);
    const onlineAlone = await alone("online-alone", online);

    // Another client of the replica serves its own adapter to requests that name none.
    const other = await pushAdapter(inference.address, adapterWithNonZeroB(expert, { rank: 2, alpha: 4, dropout: 0, targetModules: ["q_proj", "v_proj"] }, 9), { activate: true });

    const { client } = trainer;
    await client.startRun({ runId: "offline-together", config: offline });
    await client.startRun({ runId: "online-together", config: online });
    const states = await Promise.all([finished(client, "offline-together"), finished(client, "online-together")]);
    const offlineTogether = (await client.getRun({ runId: "offline-together" })).run!;
    const onlineTogether = (await client.getRun({ runId: "online-together" })).run!;
    expect(states, `${offlineTogether.error} ${onlineTogether.error}`).toEqual([RunState.SUCCEEDED, RunState.SUCCEEDED]);
    // They did overlap: the second started before the first was over.
    const record = (run: Run) => readRunRecord(run.runDir);
    expect(record(onlineTogether).createdAt < record(offlineTogether).updatedAt).toBe(true);

    for (const [together, reference] of [
      [offlineTogether, offlineAlone],
      [onlineTogether, onlineAlone],
    ]) {
      // Sampling: the same trajectories, token for token, all from the base expert.
      const samples = trajectories(together);
      expect(samples.length).toBe(16);
      expect(tokens(samples)).toEqual(tokens(trajectories(reference)));
      for (const r of samples) expect(r.adapterVersion).toBe("");
      expectSameSamples(samples, trajectories(reference));
      // Training: the same adapters at the same steps.
      const pushed = (run: Run) => record(run).adapters;
      expect(pushed(together).map((a) => a.optimizerStep)).toEqual(pushed(reference).map((a) => a.optimizerStep));
      pushed(together).forEach((a, i) => expect(maxAdapterDiff(readPeftAdapter(a.directory, expert), readPeftAdapter(pushed(reference)[i].directory, expert))).toBeLessThan(1e-3));
      // Evaluation: before on the base expert, after on the run's own final adapter.
      expect(together.evaluations.map((e) => e.adapterVersion)).toEqual(["", together.liveAdapterVersion]);
      expect(together.evaluations.map((e) => e.verdicts)).toEqual(reference.evaluations.map((e) => e.verdicts));
    }
    expect(record(onlineTogether).adapters.length).toBeGreaterThan(1);
    expect(offlineTogether.liveAdapterVersion).not.toBe(onlineTogether.liveAdapterVersion);

    // /metrics holds each run's own final selection ratio and loss, one series per run.
    const series = await scrapeMetrics(trainer.server);
    const runIds = ["offline-alone", "offline-together", "online-alone", "online-together"];
    expect(runsWithSeries(series, "lightreasoner_trainer_loss_nats")).toEqual(runIds);
    for (const run of [offlineAlone, onlineAlone, offlineTogether, onlineTogether]) {
      const c = run.counters!;
      expect(series.get(`lightreasoner_trainer_selection_ratio{run="${run.runId}"}`), run.runId).toBeCloseTo(c.stepsSelected / c.stepsSeen, 12);
      expect(series.get(`lightreasoner_trainer_loss_nats{run="${run.runId}"}`), run.runId).toBeCloseTo(c.lastLoss, 12);
    }

    // Nothing the runs pushed was activated: the other client's adapter is still the one served.
    const c = clients(inference);
    try {
      expect((await c.inference.getModelInfo({})).adapterVersion).toBe(other);
      const loaded = (await c.adapters.listAdapters({})).adapters.map((a) => a.version);
      expect(loaded).toEqual(expect.arrayContaining([offlineTogether.liveAdapterVersion, onlineTogether.liveAdapterVersion]));
    } finally {
      c.close();
    }
  });
});
