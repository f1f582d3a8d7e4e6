// Further rounds of the method (RunConfig.start_from_run) and the argmax-label ablation
// (SelectionConfig.label), through a real trainer and inference server on loopback. A run
// that continues another samples with that run's final adapter, measures it as its "before"
// and trains on from its weights; the argmax label trains each kept step toward the expert's
// own most likely token.
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadModelDir } from "#core/formats/model-dir.ts";
import { readPeftAdapter } from "#core/formats/peft.ts";
import { Status } from "#core/grpc/adapter.ts";
import { RunStage, SelectionLabel, TrainingMethod } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import type { Run } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import type { ModelConfig } from "#core/model/config.ts";
import type { InferenceServer } from "#inference/main.ts";
import { maxAdapterDiff } from "#trainer/model/testing/tiny-adapter.ts";
import { readRunRecord } from "#trainer/runs/run-record.ts";
import { SampleStore } from "#trainer/store/sample-store.ts";
import { clients, startServer, statusOf, writeTinyPair } from "#test/inference/helpers.ts";
import type { TinyPair } from "#test/inference/helpers.ts";
import { writeProblems } from "#test/trainer-sampling/helpers.ts";
import { RunState, runToSuccess, smallRun, startTrainer } from "./helpers.ts";
import type { RunConfigInit } from "./helpers.ts";

const records = (run: Run) => SampleStore.read(join(run.runDir, "samples.jsonl")).records;
const finalAdapterDir = (run: Run) => readRunRecord(run.runDir).adapters.at(-1)!.directory;
const evaluation = (run: Run, stage: RunStage) => run.evaluations.find((e) => e.stage === stage)!;

describe("a run that continues another (start_from_run), and the argmax label", () => {
  let pair: TinyPair;
  let inference: InferenceServer;
  let trainer: Awaited<ReturnType<typeof startTrainer>>;
  let expert: ModelConfig;
  let base: RunConfigInit;
  let first: Run;
  beforeAll(async () => {
    pair = writeTinyPair();
    expert = loadModelDir(pair.expertDir).config;
    inference = await startServer(pair);
    trainer = await startTrainer(pair.expertDir, [inference.address], join(pair.root, "runs"));
    // Greedy, so a step's sampled token is the expert's most likely one and evaluations repeat exactly.
    base = smallRun(writeProblems(pair.root, 12).file, { sampling: { params: { temperature: 0, maxNewTokens: 16 }, concurrency: 4 }, evalProblems: { path: writeProblems(pair.root, 4, 500).file } });
    first = await finish("round-1", base);
  });
  afterAll(async () => {
    await trainer?.close();
    await inference?.close(1000);
    pair?.remove();
  });

  const finish = (runId: string, config: RunConfigInit) => runToSuccess(trainer.client, runId, config);

  it("samples with the earlier run's adapter, measures it as 'before', and trains on from its weights", async () => {
    const firstVersion = first.liveAdapterVersion;
    expect(firstVersion).not.toBe("");
    // A learning rate too small to move the weights: what the second round ends with is where it started.
    const second = await finish("round-2", { ...base, startFromRun: "round-1", optimization: { ...base.optimization, learningRate: 1e-12 } });

    expect(second.config?.startFromRun).toBe("round-1");
    for (const r of records(second)) expect(r.adapterVersion).toBe(firstVersion);
    const before = evaluation(second, RunStage.EVALUATING_BEFORE);
    expect(before.adapterVersion).toBe(firstVersion);
    expect(before.verdicts).toEqual(evaluation(first, RunStage.EVALUATING_AFTER).verdicts);
    // The same adapter on the same problems with the same settings: taken from round 1, not run again.
    expect(before.reusedFromRun).toBe("round-1");
    expect(before.wallSeconds).toBe(0);

    const started = readPeftAdapter(finalAdapterDir(first), expert);
    const ended = readPeftAdapter(finalAdapterDir(second), expert);
    expect(maxAdapterDiff(ended, started)).toBeLessThan(1e-6);
    // The first round moved B away from its zero start, so a fresh start would be far from it.
    expect(Math.max(...[...started.pairs.values()].flatMap((p) => Array.from(p.b.data, (v) => Math.abs(v))))).toBeGreaterThan(1e-3);
  });

  it("uploads the earlier run's adapter again when the replica loses it during sampling, and samples on with it", async () => {
    const version = first.liveAdapterVersion;
    // Enough problems that sampling is still under way when the adapter goes (4 in flight at a time).
    const config = { ...base, startFromRun: "round-1", problems: { path: writeProblems(pair.root, 40, 1000).file }, optimization: { ...base.optimization, maxSteps: 1 } };
    await trainer.client.startRun({ runId: "round-lost", config });
    const warnings: string[] = [];
    let lost = false;
    let state: RunState | undefined;
    for await (const { event } of trainer.client.watchRun({ runId: "round-lost" })) {
      const sampling = (event.case === "snapshot" && event.value.stage === RunStage.SAMPLING) || (event.case === "stageChanged" && event.value.current === RunStage.SAMPLING);
      if (sampling && !lost) {
        // What an eviction or a restart does to the replica: the version is no longer loaded.
        const c = clients(inference);
        try {
          await c.adapters.unloadAdapter({ version });
        } finally {
          c.close();
        }
        lost = true;
      }
      if (event.case === "warning") warnings.push(event.value.message);
      if (event.case === "finished") state = event.value.state;
    }
    expect(lost).toBe(true);
    expect(state).toBe(RunState.SUCCEEDED);
    expect(warnings.filter((w) => w.includes(`no longer holds adapter ${version}`)).length).toBe(1);
    const { run } = await trainer.client.getRun({ runId: "round-lost" });
    const stored = records(run!);
    expect(stored).toHaveLength(40);
    for (const r of stored) expect(r.adapterVersion).toBe(version);
  });

  it("refuses a run it cannot continue, naming why", async () => {
    const unknown = await statusOf(() => trainer.client.startRun({ runId: "x1", config: { ...base, startFromRun: "no-such-run" } }));
    expect(unknown.code).toBe(Status.NOT_FOUND);
    expect(unknown.message).toContain("start_from_run");

    const badId = await statusOf(() => trainer.client.startRun({ runId: "x2", config: { ...base, startFromRun: "../round-1" } }));
    expect(badId.code).toBe(Status.INVALID_ARGUMENT);
    expect(badId.message).toContain("start_from_run");

    const otherShape = await statusOf(() => trainer.client.startRun({ runId: "x3", config: { ...base, startFromRun: "round-1", lora: { rank: 4 } } }));
    expect(otherShape.code).toBe(Status.INVALID_ARGUMENT);
    expect(otherShape.message).toMatch(/^lora: must have the shape of run round-1's adapter \(rank 8/);

    await trainer.client.startRun({ runId: "cancelled", config: base });
    await trainer.client.cancelRun({ runId: "cancelled" });
    const notDone = await statusOf(() => trainer.client.startRun({ runId: "x4", config: { ...base, startFromRun: "cancelled" } }));
    expect(notDone.code).toBe(Status.FAILED_PRECONDITION);
    expect(notDone.message).toContain("CANCELLED");
  });

  it("trains each kept step toward the expert's most likely token with the argmax label", async () => {
    const argmax = await finish("argmax", { ...base, selection: { ...base.selection, label: SelectionLabel.EXPERT_ARGMAX } });
    expect(argmax.config?.selection?.label).toBe(SelectionLabel.EXPERT_ARGMAX);
    const kept = records(argmax).flatMap((r) => r.selected.map((s) => ({ s, token: r.completionTokenIds[s.step] })));
    expect(kept.length).toBeGreaterThan(0);
    for (const { s, token } of kept) {
      expect(s.ids).toEqual([token]);
      expect(s.weights).toEqual([1]);
    }
    // The same steps are kept as under the contrastive label, which spreads weight over the plausible set.
    const contrastive = records(first).flatMap((r) => r.selected.map((s) => `${r.problemId}:${s.step}`));
    expect(records(argmax).flatMap((r) => r.selected.map((s) => `${r.problemId}:${s.step}`)).sort()).toEqual(contrastive.sort());
    expect(records(first).some((r) => r.selected.some((s) => s.ids.length > 1))).toBe(true);
  });

  it("measures the base expert again only when something that shapes the answers differs", async () => {
    const same = await finish("same-eval", { ...base, optimization: { ...base.optimization, maxSteps: 1 } });
    expect(evaluation(same, RunStage.EVALUATING_BEFORE)).toMatchObject({ reusedFromRun: "round-1", verdicts: evaluation(first, RunStage.EVALUATING_BEFORE).verdicts });
    const shorter = await finish("shorter-answers", { ...base, sampling: { params: { temperature: 0, maxNewTokens: 12 }, concurrency: 4 }, optimization: { ...base.optimization, maxSteps: 1 } });
    const before = evaluation(shorter, RunStage.EVALUATING_BEFORE);
    expect(before.reusedFromRun).toBe("");
    expect(before.wallSeconds).toBeGreaterThan(0);
  });

  it("refuses the argmax label for the SFT baseline", async () => {
    const sft = await statusOf(() => trainer.client.startRun({ runId: "x5", config: { ...base, method: TrainingMethod.SFT, selection: { label: SelectionLabel.EXPERT_ARGMAX } } }));
    expect(sft.code).toBe(Status.INVALID_ARGUMENT);
    expect(sft.message).toMatch(/^selection\.label:/);
  });
});
