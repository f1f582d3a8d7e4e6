// The hand-off the whole system rests on: samples from a real inference service train an
// adapter in TensorFlow.js, the adapter is pushed back over gRPC, and the service's expert
// then computes exactly what the trainer's TensorFlow.js expert with that adapter computes.
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseProblems } from "#core/tasks/problems.ts";
import { loadModelDir } from "#core/formats/model-dir.ts";
import type { InferenceServer } from "#inference/main.ts";
import { sampleToStore } from "#trainer/sampling/sample-to-store.ts";
import { SampleStore } from "#trainer/store/sample-store.ts";
import { trainLora } from "#trainer/training/lora-trainer.ts";
import { pushAdapter } from "#trainer/adapter-push.ts";
import type { TinyPair } from "#test/inference/helpers.ts";
import { startServer, writeTinyPair } from "#test/inference/helpers.ts";
import { compareServedExpert } from "#test/helpers/served-expert.ts";

describe("an adapter trained on served samples, pushed back", () => {
  let pair: TinyPair;
  let server: InferenceServer;
  let target: string;
  beforeAll(async () => {
    pair = writeTinyPair();
    server = await startServer(pair);
    target = `127.0.0.1:${server.port}`;
  });
  afterAll(async () => {
    await server?.close(1000);
    pair?.remove();
  });

  it("makes the served expert equal the trainer's TensorFlow.js expert with that adapter", async () => {
    const lines = ["two plus two", "count the apples", "how many birds", "the sum of five numbers"].map((prompt) => JSON.stringify({ prompt }));
    const { problems } = parseProblems(lines.join("\n"), "inline.jsonl");
    const storePath = join(pair.root, "samples.jsonl");
    await sampleToStore({ endpoints: { targets: [target], expertDir: pair.expertDir }, problems, storePath, config: { seed: 3, beta: 0.05, maxNewTokens: 12, temperature: 1 } });
    const store = SampleStore.open(storePath);
    const trajectories = [...store.trajectories()].filter((t) => t.targets.length > 0);
    store.close();
    expect(trajectories.length).toBeGreaterThan(0);

    const { config, weights } = loadModelDir(pair.expertDir);
    const trained = await trainLora({ expert: { config, weights }, trajectories, config: { maxSteps: 3, learningRate: 5e-2, pushEverySteps: 0 } });
    const version = await pushAdapter(target, trained.adapter, { activate: true });
    expect(version).toMatch(/^[0-9a-f]{16}$/);

    const ids = trajectories[0].tokenIds;
    const served = await compareServedExpert(server, pair.expertDir, trained.adapter, ids);
    expect(served.servedVersion).toBe(version);
    expect(served.positions).toBe(ids.length);
    expect(served.maxDiff).toBeLessThan(1e-4);
    // Training must have moved the expert, or equality above would be trivial.
    expect(served.maxFromBase).toBeGreaterThan(1e-3);
  });
});
