// TrainerService over real gRPC on loopback, beside a real inference server with the tiny
// random pair: an online run from StartRun to the finished event (events, counters, adapters pushed
// every N steps, the served expert equal to the trainer's TF.js expert with the final
// adapter, Prometheus series), and the runs list.
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readPeftAdapter } from "#core/formats/peft.ts";
import { loadModelDir } from "#core/formats/model-dir.ts";
import { RunMode, RunStage, SamplingAdapter } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import type { WatchRunResponse } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import type { InferenceServer } from "#inference/main.ts";
import { SampleStore } from "#trainer/store/sample-store.ts";
import { writePaperSamples } from "#trainer/store/paper-format.ts";
import { TextTokenizer } from "#core/formats/tokenizer.ts";
import { readRunRecord } from "#trainer/runs/run-record.ts";
import { clients, startServer, writeTinyPair } from "#test/inference/helpers.ts";
import type { TinyPair } from "#test/inference/helpers.ts";
import { writeProblems } from "#test/trainer-sampling/helpers.ts";
import { compareServedExpert } from "#test/helpers/served-expert.ts";
import { RunState, smallRun, startTrainer, watchAll } from "./helpers.ts";

/** The snapshot's stage and every later change are the run's stages in order, from wherever the watcher joined. */
function expectStages(events: WatchRunResponse[], all: RunStage[]): void {
  const first = events[0].event;
  if (first.case !== "snapshot") throw new Error("the first event is not a snapshot");
  const seen = [first.value.stage, ...events.flatMap((e) => (e.event.case === "stageChanged" ? [e.event.value.current] : []))];
  expect(all).toContain(seen[0]);
  expect(seen).toEqual(all.slice(all.indexOf(seen[0])));
}

describe("TrainerService: an online run", () => {
  let pair: TinyPair;
  let inference: InferenceServer;
  let trainer: Awaited<ReturnType<typeof startTrainer>>;
  let problemsFile: string;
  let evalFile: string;
  beforeAll(async () => {
    pair = writeTinyPair();
    inference = await startServer(pair);
    problemsFile = writeProblems(pair.root, 24).file;
    evalFile = writeProblems(pair.root, 4, 100).file;
    trainer = await startTrainer(pair.expertDir, [inference.address], join(pair.root, "runs"));
  });
  afterAll(async () => {
    await trainer?.close();
    await inference?.close(1000);
    pair?.remove();
  });

  it("samples, trains, pushes an adapter every N steps, and leaves the served expert equal to the trainer's", async () => {
    const { client } = trainer;
    const config = smallRun(problemsFile, {
      mode: RunMode.ONLINE,
      // Later trajectories from the run's own latest adapter (each request names it).
      sampling: { params: { temperature: 1, maxNewTokens: 16 }, concurrency: 4, adapter: SamplingAdapter.LATEST_PUSHED },
      evalProblems: { path: evalFile },
      optimization: { learningRate: 5e-2, batchSize: 4, gradientAccumulation: 1, maxSteps: 6, pushEverySteps: 2 },
      activateFinalAdapter: true,
    });
    const { run: started } = await client.startRun({ runId: "online-1", config });
    expect(started?.runId).toBe("online-1");
    expect(started?.state).toBe(RunState.RUNNING);
    // Every default is resolved in the reported config.
    expect(started?.config?.selection?.alpha).toBeCloseTo(0.2);
    expect(started?.config?.lora?.targetModules).toEqual(["q_proj", "v_proj"]);
    expect(started?.config?.inferenceEndpoints).toEqual([inference.address]);

    const events = await watchAll(client, "online-1");
    expect(events.map((e) => e.sequence)).toEqual(events.map((_, i) => i));
    expect(events[0].event.case).toBe("snapshot");
    const last = events.at(-1)!.event;
    expect(last.case).toBe("finished");
    if (last.case !== "finished") return;
    expect(last.value.error).toBe("");
    expect(last.value.state).toBe(RunState.SUCCEEDED);

    expectStages(events, [RunStage.PREPARING, RunStage.EVALUATING_BEFORE, RunStage.SAMPLING_AND_TRAINING, RunStage.EVALUATING_AFTER, RunStage.DONE]);
    const steps = events.flatMap((e) => (e.event.case === "trainingStep" ? [e.event.value] : []));
    expect(steps.map((s) => s.step)).toEqual([1, 2, 3, 4, 5, 6]);
    for (const s of steps) expect(Number.isFinite(s.loss) && s.loss >= 0).toBe(true);
    const pushes = events.flatMap((e) => (e.event.case === "adapterPushed" ? [e.event.value] : []));
    expect(pushes.map((p) => p.optimizerStep)).toEqual([2, 4, 6]);
    expect(new Set(pushes.map((p) => p.version)).size).toBe(3);
    for (const p of pushes) expect(p.endpoints).toEqual([inference.address]);
    const finalVersion = pushes[2].version;
    expect(last.value.liveAdapterVersion).toBe(finalVersion);

    const { run } = await client.getRun({ runId: "online-1" });
    // The finished event is the run as it ended, the very message GetRun returns afterwards.
    expect(last.value).toEqual(run);
    const c = run!.counters!;
    expect(c.stepsSelected).toBeGreaterThan(0);
    expect(c.stepsSelected).toBeLessThanOrEqual(c.stepsSeen);
    expect(c.samplesStored).toBe(c.stepsSelected);
    expect(c.optimizerSteps).toBe(6);
    expect(c.optimizerStepsTotal).toBe(6);
    expect(c.adaptersPushed).toBe(3);
    expect(c.tunedTokens).toBe(steps.reduce((sum, s) => sum + s.tunedTokens, 0));
    expect(run!.liveAdapterVersion).toBe(finalVersion);
    expect(run!.tfjsBackend).toBe(trainer.server.tfjsBackend);
    expect(run!.trainingEngine).toBe(trainer.server.trainingEngine);
    expect(run!.trainingEngine).toMatch(/^(onnxruntime|tfjs)$/);
    expect(run!.evaluations.map((e) => [e.stage, e.problems, e.verdicts.length])).toEqual([
      [RunStage.EVALUATING_BEFORE, 4, 4],
      [RunStage.EVALUATING_AFTER, 4, 4],
    ]);
    expect(run!.evaluations.map((e) => e.adapterVersion)).toEqual(["", finalVersion]);
    expect(run!.stageTimings.map((t) => t.stage)).toContain(RunStage.SAMPLING_AND_TRAINING);

    // The sample store holds exactly what the counters say, and every trajectory came from
    // the base expert or from one of the run's own adapters.
    const records = SampleStore.read(join(run!.runDir, "samples.jsonl")).records;
    expect(records.length).toBe(c.problemsSampled);
    expect(records.reduce((n, r) => n + r.stepsSeen, 0)).toBe(c.stepsSeen);
    expect(records.reduce((n, r) => n + r.selected.length, 0)).toBe(c.stepsSelected);
    for (const r of records) expect(["", ...pushes.map((p) => p.version)]).toContain(r.adapterVersion);

    // The replica serves the final adapter (activate_final_adapter), and computes what the trainer's TF.js expert does.
    const info = await clients(inference).inference.getModelInfo({});
    expect(info.adapterVersion).toBe(finalVersion);
    const adapter = readPeftAdapter(pushes[2].directory, loadModelDir(pair.expertDir).config);
    const served = await compareServedExpert(inference, pair.expertDir, adapter, [...records[0].promptTokenIds, ...records[0].completionTokenIds]);
    expect(served.servedVersion).toBe(finalVersion);
    expect(served.maxDiff).toBeLessThan(1e-4);
    expect(served.maxFromBase).toBeGreaterThan(1e-3);

    // run.json is the same run.
    const record = readRunRecord(run!.runDir);
    expect(record.state).toBe("succeeded");
    expect(record.losses.map((l) => l.step)).toEqual([1, 2, 3, 4, 5, 6]);

    // Prometheus sees the same numbers.
    const text = await (await fetch(`http://127.0.0.1:${trainer.server.metricsPort}/metrics`)).text();
    const value = (series: string) => Number(new RegExp(`^${series.replace(/[{}"]/g, "\\$&")} (\\S+)$`, "m").exec(text)?.[1]);
    expect(value("lightreasoner_trainer_steps_seen_total")).toBe(c.stepsSeen);
    expect(value("lightreasoner_trainer_steps_selected_total")).toBe(c.stepsSelected);
    expect(value("lightreasoner_trainer_step_kl_nats_count")).toBe(c.stepsSeen);
    expect(value("lightreasoner_trainer_optimizer_steps_total")).toBe(6);
    expect(value("lightreasoner_trainer_adapters_pushed_total")).toBe(3);
    expect(value('lightreasoner_trainer_runs{state="succeeded"}')).toBe(1);
    // Per-run gauges carry the run's id; a run that is over has no last-progress series.
    expect(value('lightreasoner_trainer_selection_ratio{run="online-1"}')).toBeCloseTo(c.stepsSelected / c.stepsSeen, 6);
    expect(value('lightreasoner_trainer_loss_nats{run="online-1"}')).toBeCloseTo(steps.at(-1)!.loss, 12);
    expect(value('lightreasoner_trainer_samples_per_second{run="online-1"}')).toBeGreaterThan(0);
    expect(text).not.toMatch(/^lightreasoner_trainer_last_progress_timestamp_seconds\{/m);
  });

  it("lists runs newest first, filters by state, and replays a finished run to a late watcher", async () => {
    const { client } = trainer;
    const { run } = await client.startRun({ runId: "offline-2", config: smallRun(problemsFile, { optimization: { maxSteps: 2, batchSize: 4 } }) });
    expect(run?.state).toBe(RunState.RUNNING);
    const events = await watchAll(client, "offline-2");
    expect(events.at(-1)?.event.case).toBe("finished");
    expectStages(events, [RunStage.PREPARING, RunStage.SAMPLING, RunStage.TRAINING, RunStage.DONE]);

    const { runs } = await client.listRuns({});
    expect(runs.map((r) => r.runId)).toEqual(["offline-2", "online-1"]);
    expect((await client.listRuns({ state: RunState.FAILED })).runs).toEqual([]);

    const late = await watchAll(client, "online-1");
    expect(late.map((e) => e.event.case)).toEqual(["snapshot", "finished"]);
    // Cancelling a run that is over changes nothing.
    expect((await client.cancelRun({ runId: "online-1" })).run?.state).toBe(RunState.SUCCEEDED);
  });

  it("trains on samples imported from the reference scripts' format", async () => {
    const { client } = trainer;
    const { run: source } = await client.getRun({ runId: "online-1" });
    const records = SampleStore.read(join(source!.runDir, "samples.jsonl")).records;
    const file = join(pair.root, "paper-samples.jsonl");
    const written = writePaperSamples(file, records, TextTokenizer.load(pair.expertDir));
    expect(written).toBe(records.reduce((n, r) => n + r.selected.length, 0));

    await client.startRun({ runId: "imported", config: { importSamplesPath: file, optimization: { maxSteps: 3, batchSize: 4 }, seed: 2 } });
    const events = await watchAll(client, "imported");
    const last = events.at(-1)!.event;
    expect(last.case === "finished" && last.value.error).toBe("");
    const { run } = await client.getRun({ runId: "imported" });
    expect(run?.state).toBe(RunState.SUCCEEDED);
    expect(run!.counters!.samplesStored).toBe(written);
    expect(run!.counters!.optimizerSteps).toBe(3);
    expect(run!.counters!.problemsTotal).toBe(0);
    expect(run!.liveAdapterVersion).toMatch(/^[0-9a-f]{16}$/);
  });
});
