// Runs that stop and continue: a run cancelled during sampling, and one whose trainer shut
// down during training and came back, each resumed to the same samples and the same amount
// of training as an uninterrupted run with the same seed. And every bad StartRun gets its
// status code with the offending field named.
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Status } from "#core/grpc/adapter.ts";
import { RunMode, RunStage } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import type { RunCounters } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import type { InferenceServer } from "#inference/main.ts";
import { SampleStore } from "#trainer/store/sample-store.ts";
import { RUN_FILE } from "#trainer/runs/run-record.ts";
import { clients, startServer, statusOf, writeTinyPair } from "#test/inference/helpers.ts";
import type { TinyPair } from "#test/inference/helpers.ts";
import { expectSameSamples, writeProblems } from "#test/trainer-sampling/helpers.ts";
import { finished, RunState, smallRun, startTrainer, stepsBeyondFirstPass, waitFor } from "./helpers.ts";

const trainingSummary = (c: RunCounters | undefined) => ({ problemsSampled: c?.problemsSampled, stepsSeen: c?.stepsSeen, stepsSelected: c?.stepsSelected, tunedTokens: c?.tunedTokens, optimizerSteps: c?.optimizerSteps });

describe("runs that are cancelled, interrupted and resumed", () => {
  let pair: TinyPair;
  let inference: InferenceServer;
  let problemsFile: string;
  let runsDir: string;
  let trainer: Awaited<ReturnType<typeof startTrainer>>;
  const config = () => smallRun(problemsFile, { sampling: { params: { temperature: 1, maxNewTokens: 16 }, concurrency: 1 }, optimization: { learningRate: 5e-2, batchSize: 4, gradientAccumulation: 1, maxSteps: 30, checkpointEverySteps: 10 } });
  beforeAll(async () => {
    pair = writeTinyPair();
    inference = await startServer(pair);
    problemsFile = writeProblems(pair.root, 120).file;
    runsDir = join(pair.root, "runs");
    trainer = await startTrainer(pair.expertDir, [inference.address], runsDir);
    await trainer.client.startRun({ runId: "reference", config: config() });
    expect(await finished(trainer.client, "reference")).toBe(RunState.SUCCEEDED);
  });
  afterAll(async () => {
    await trainer?.close();
    await inference?.close(1000);
    pair?.remove();
  });

  const samplesOf = (runId: string) => SampleStore.read(join(runsDir, runId, "samples.jsonl")).records;

  it("cancelled during sampling, then resumed: the same samples and training as without the interruption", async () => {
    const { client } = trainer;
    await client.startRun({ runId: "cancelled", config: config() });
    await waitFor(client, "cancelled", (e) => e.event.case === "progress" && e.event.value.problemsSampled >= 3);
    const { run: stopped } = await client.cancelRun({ runId: "cancelled" });
    expect(stopped?.state).toBe(RunState.CANCELLED);
    expect(stopped?.stage).toBe(RunStage.SAMPLING);
    expect(stopped!.counters!.problemsSampled).toBeLessThan(120);
    expect(samplesOf("cancelled").length).toBe(stopped!.counters!.problemsSampled);

    const { run: resumed } = await client.resumeRun({ runId: "cancelled" });
    expect(resumed?.state).toBe(RunState.RUNNING);
    expect(await finished(client, "cancelled")).toBe(RunState.SUCCEEDED);
    const { run } = await client.getRun({ runId: "cancelled" });
    const { run: reference } = await client.getRun({ runId: "reference" });
    expectSameSamples(samplesOf("cancelled"), samplesOf("reference"));
    expect(trainingSummary(run!.counters)).toEqual(trainingSummary(reference!.counters));
  });

  it("a trainer that shuts down mid-training leaves the run resumable by the next trainer, which finishes it", async () => {
    await trainer.client.startRun({ runId: "interrupted", config: config() });
    await waitFor(trainer.client, "interrupted", (e) => e.event.case === "trainingStep" && e.event.value.step >= 2);
    await trainer.close();

    trainer = await startTrainer(pair.expertDir, [inference.address], runsDir);
    const { client } = trainer;
    const { run: found } = await client.getRun({ runId: "interrupted" });
    expect(found?.state).toBe(RunState.CANCELLED);
    expect(found?.stage).toBe(RunStage.TRAINING);
    expect(found!.counters!.optimizerSteps).toBeLessThan(30);

    await client.resumeRun({ runId: "interrupted" });
    expect(await finished(client, "interrupted")).toBe(RunState.SUCCEEDED);
    const { run } = await client.getRun({ runId: "interrupted" });
    const { run: reference } = await client.getRun({ runId: "reference" });
    expectSameSamples(samplesOf("interrupted"), samplesOf("reference"));
    expect(trainingSummary(run!.counters)).toEqual(trainingSummary(reference!.counters));
    expect(run!.stageTimings.find((t) => t.stage === RunStage.TRAINING)!.wallSeconds).toBeGreaterThan(0);
  });

  it("a run left RUNNING by a trainer that was killed is reported FAILED and can be resumed", async () => {
    await trainer.close();
    // What a SIGKILLed trainer leaves behind: the record still says running.
    const file = join(runsDir, "reference", RUN_FILE);
    writeFileSync(file, readFileSync(file, "utf8").replace('"state": "succeeded"', '"state": "running"'));
    trainer = await startTrainer(pair.expertDir, [inference.address], runsDir);
    const { run } = await trainer.client.getRun({ runId: "reference" });
    expect(run?.state).toBe(RunState.FAILED);
    expect(run?.error).toMatch(/trainer stopped while this run was running/);
    await trainer.client.resumeRun({ runId: "reference" });
    expect(await finished(trainer.client, "reference")).toBe(RunState.SUCCEEDED);
    expect((await trainer.client.getRun({ runId: "reference" })).run?.counters?.optimizerSteps).toBe(30);
  });
});

describe("a run whose inference replica goes away", () => {
  it("fails with the endpoint named, keeps its samples, and resumes once the replica is back", async () => {
    const pair = writeTinyPair();
    let inference = await startServer(pair);
    const port = inference.port;
    const trainer = await startTrainer(pair.expertDir, [inference.address], join(pair.root, "runs"));
    try {
      const problemsFile = writeProblems(pair.root, 16).file;
      await trainer.client.startRun({ runId: "push", config: smallRun(problemsFile, { optimization: { learningRate: 5e-2, batchSize: 4, maxSteps: 100, checkpointEverySteps: 25 }, activateFinalAdapter: true }) });
      await waitFor(trainer.client, "push", (e) => e.event.case === "trainingStep");
      // The replica stops while the run trains; the adapter push at the end has nowhere to go.
      await inference.close(0);
      expect(await finished(trainer.client, "push")).toBe(RunState.FAILED);
      const { run: failed } = await trainer.client.getRun({ runId: "push" });
      expect(failed?.error).toMatch(new RegExp(`could not push the adapter to 127\\.0\\.0\\.1:${port}`));
      const stored = SampleStore.read(join(failed!.runDir, "samples.jsonl")).records.length;
      expect(stored).toBe(16);

      inference = await startServer(pair, { port });
      await trainer.client.resumeRun({ runId: "push" });
      expect(await finished(trainer.client, "push")).toBe(RunState.SUCCEEDED);
      const { run } = await trainer.client.getRun({ runId: "push" });
      expect(run!.counters!.optimizerSteps).toBe(100);
      expect(run!.counters!.problemsSampled).toBe(16);
      expect(SampleStore.read(join(run!.runDir, "samples.jsonl")).records.length).toBe(16);
      // The resumed run uploaded its adapter to the new replica and, as asked, activated it at the end.
      const info = await clients(inference).inference.getModelInfo({});
      expect(info.adapterVersion).toBe(run!.liveAdapterVersion);
    } finally {
      await trainer.close();
      await inference.close(0);
      pair.remove();
    }
  });
});

describe("StartRun and friends refuse bad requests with the contract's codes", () => {
  let pair: TinyPair;
  let inference: InferenceServer;
  let trainer: Awaited<ReturnType<typeof startTrainer>>;
  let problemsFile: string;
  beforeAll(async () => {
    pair = writeTinyPair();
    inference = await startServer(pair, { limits: { maxNewTokens: 64, defaultMaxNewTokens: 64 } });
    problemsFile = writeProblems(pair.root, 8).file;
    trainer = await startTrainer(pair.expertDir, [inference.address], join(pair.root, "runs"));
  });
  afterAll(async () => {
    await trainer?.close();
    await inference?.close(1000);
    pair?.remove();
  });

  const start = (runId: string, config: ReturnType<typeof smallRun>) => statusOf(() => trainer.client.startRun({ runId, config }));

  it("INVALID_ARGUMENT names the field, the file line, or the limit that was broken", async () => {
    const cases: [ReturnType<typeof smallRun>, RegExp][] = [
      [smallRun(problemsFile, { selection: { beta: -1 } }), /^selection\.beta: /],
      [smallRun(problemsFile, { selection: { alpha: 2 } }), /^selection\.alpha: /],
      [smallRun(problemsFile, { optimization: { learningRate: -1 } }), /^optimization\.learning_rate: /],
      [smallRun(problemsFile, { sampling: { params: { maxNewTokens: 65 } } }), /^sampling\.params\.max_new_tokens: .*64/],
      [smallRun(join(pair.root, "absent.jsonl")), /^problems\.path: no file at/],
      [smallRun(problemsFile, { inferenceEndpoints: ["localhost"] }), /^inference_endpoints\[0\]: /],
    ];
    for (const [config, message] of cases) {
      const err = await start("", config);
      expect(err.code, err.message).toBe(Status.INVALID_ARGUMENT);
      expect(err.message).toMatch(message);
    }
    const bad = join(pair.root, "bad.jsonl");
    writeFileSync(bad, `${JSON.stringify({ prompt: "fine", answer: 1 })}\n${JSON.stringify({ prompt: 7 })}\n`);
    const err = await start("", smallRun(bad));
    expect(err.code).toBe(Status.INVALID_ARGUMENT);
    expect(err.message).toMatch(/bad\.jsonl:2: "prompt" must be a string/);
    const id = await start("../escape", smallRun(problemsFile));
    expect(id.code).toBe(Status.INVALID_ARGUMENT);
    expect(id.message).toMatch(/^run_id: /);
    expect((await trainer.client.listRuns({})).runs).toEqual([]);
  });

  it("PERMISSION_DENIED for an endpoint the operator did not list: the trainer would present its credential there", async () => {
    const unlisted = await start("", smallRun(problemsFile, { inferenceEndpoints: [inference.address, "127.0.0.1:1"] }));
    expect(unlisted.code).toBe(Status.PERMISSION_DENIED);
    expect(unlisted.message).toMatch(/^inference_endpoints\[1\]: "127\.0\.0\.1:1" is not an endpoint this trainer may use/);
    expect((await trainer.client.listRuns({})).runs).toEqual([]);
  });

  it("UNAVAILABLE for an endpoint that does not answer, FAILED_PRECONDITION for an expert the endpoints do not serve", async () => {
    const allowing = await startTrainer(pair.expertDir, [inference.address], join(pair.root, "runs-allowing"), ["127.0.0.1:1"]);
    try {
      const down = await statusOf(() => allowing.client.startRun({ config: smallRun(problemsFile, { inferenceEndpoints: ["127.0.0.1:1"] }) }));
      expect(down.code).toBe(Status.UNAVAILABLE);
      expect(down.message).toMatch(/127\.0\.0\.1:1/);
    } finally {
      await allowing.close();
    }

    const wrong = await startTrainer(pair.amateurDir, [inference.address], join(pair.root, "runs-wrong"));
    try {
      const err = await statusOf(() => wrong.client.startRun({ config: smallRun(problemsFile) }));
      expect(err.code).toBe(Status.FAILED_PRECONDITION);
      expect(err.message).toMatch(/fingerprint/);
    } finally {
      await wrong.close();
    }
  });

  it("validate_only resolves and checks without starting or storing anything", async () => {
    const { run } = await trainer.client.startRun({ runId: "dry", validateOnly: true, config: smallRun(problemsFile) });
    expect(run?.state).toBe(RunState.PENDING);
    expect(run?.config?.selection?.alpha).toBeCloseTo(0.2);
    expect(run?.config?.seed).toBe(21);
    expect((await trainer.client.listRuns({})).runs).toEqual([]);
    expect(existsSync(join(pair.root, "runs", "dry"))).toBe(false);
  });

  it("NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION where the run's state forbids the call, RESOURCE_EXHAUSTED beyond the runs the trainer runs at once", async () => {
    const { client } = trainer;
    for (const call of [() => client.getRun({ runId: "nope" }), () => client.cancelRun({ runId: "nope" }), () => client.resumeRun({ runId: "nope" })]) {
      expect((await statusOf(call)).code).toBe(Status.NOT_FOUND);
    }
    expect((await statusOf(async () => { for await (const _ of client.watchRun({ runId: "nope" })); })).code).toBe(Status.NOT_FOUND);

    // Two runs at once (the trainer's default bound); a third is refused until one ends.
    const long = smallRun(problemsFile, { optimization: { maxSteps: 200, batchSize: 4 } });
    await client.startRun({ runId: "first", config: long });
    await client.startRun({ runId: "second", config: long });
    const busy = await start("third", smallRun(problemsFile));
    expect(busy.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(busy.message).toMatch(/at most 2 runs at once and first, second are running/);
    const running = await statusOf(() => client.resumeRun({ runId: "first" }));
    expect(running.code).toBe(Status.FAILED_PRECONDITION);
    await client.cancelRun({ runId: "first" });
    const { run: third } = await client.startRun({ runId: "third", config: smallRun(problemsFile) });
    expect(third?.state).toBe(RunState.RUNNING);
    // A cancelled run waits for a free place too.
    const full = await statusOf(() => client.resumeRun({ runId: "first" }));
    expect(full.code).toBe(Status.RESOURCE_EXHAUSTED);
    await Promise.all(["second", "third"].map((runId) => client.cancelRun({ runId })));

    const taken = await start("first", smallRun(problemsFile));
    expect(taken.code).toBe(Status.ALREADY_EXISTS);
  });

  it("an online run whose trajectory the replica refuses fails naming the problem, and the trainer stays up", async () => {
    const refused = join(pair.root, "refused.jsonl");
    const lines = Array.from({ length: 12 }, (_, i) => JSON.stringify({ prompt: `what is ${i} + ${i}?`, answer: 2 * i }));
    // Far above the server's 4,096-token prompt limit: INVALID_ARGUMENT, which no retry fixes. It
    // comes late, so training is usually mid-step when sampling fails (where the failure once went unhandled).
    lines.splice(10, 0, JSON.stringify({ prompt: "one two three ".repeat(3000), answer: 1 }));
    writeFileSync(refused, `${lines.join("\n")}\n`);
    const { client } = trainer;
    // Training waits for line 11's trajectory before it can finish, so the refusal is always reached.
    const optimization = { learningRate: 5e-2, batchSize: 4, gradientAccumulation: 1, maxSteps: stepsBeyondFirstPass(10, 16, 4) };
    await client.startRun({ runId: "refused-online", config: smallRun(refused, { mode: RunMode.ONLINE, optimization }) });
    expect(await finished(client, "refused-online")).toBe(RunState.FAILED);
    const { run } = await client.getRun({ runId: "refused-online" });
    expect(run?.error).toMatch(/line 11/);
    expect((await client.listRuns({})).runs.map((r) => r.runId)).toContain("refused-online");
  });
});
