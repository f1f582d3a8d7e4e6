// The hand-off the whole system rests on: samples from a real inference service train an
// adapter in TensorFlow.js, the adapter is pushed back over gRPC, and the service's expert
// then computes exactly what the trainer's TensorFlow.js expert with that adapter computes.
import * as tf from "@tensorflow/tfjs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseProblems } from "../../core/tasks/problems.ts";
import { loadModelDir } from "../../core/formats/model-dir.ts";
import { logSoftmax } from "../../core/math/distribution.ts";
import type { InferenceServer } from "../../services/inference/src/main.ts";
import { sampleToStore } from "../../services/trainer/src/sampling/sample-to-store.ts";
import { fullLogProbs } from "../../services/trainer/src/sampling/step-selection.ts";
import { SampleStore } from "../../services/trainer/src/store/sample-store.ts";
import { trainLora } from "../../services/trainer/src/training/lora-trainer.ts";
import { pushAdapter } from "../../services/trainer/src/adapter-push.ts";
import { CausalLM } from "../../services/trainer/src/model/transformer.ts";
import { LoraLayers } from "../../services/trainer/src/model/lora.ts";
import type { TinyPair } from "../inference/helpers.ts";
import { clients, collect, FULL32, idsPrompt, startServer, VOCAB, writeTinyPair } from "../inference/helpers.ts";

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
    const version = await pushAdapter(target, trained.adapter);
    expect(version).toMatch(/^[0-9a-f]{16}$/);

    const ids = trajectories[0].tokenIds;
    const messages = await collect(clients(server).inference.score({ prompt: idsPrompt(ids), distributions: FULL32 }));
    expect((messages[0].event.value as { adapterVersion: string }).adapterVersion).toBe(version);
    const served = messages.slice(1).map(({ event }) => {
      if (event.case !== "position" || event.value.distributions.case !== "full") throw new Error(`unexpected Score message ${event.case}`);
      return { position: event.value.position, expert: fullLogProbs(event.value.distributions.value, VOCAB).expert };
    });

    const lora = LoraLayers.fromAdapter(config, trained.adapter);
    const model = new CausalLM(config, weights, { adapter: lora });
    const logits = tf.tidy(() => model.forward([ids]).dataSync() as Float32Array);
    model.useAdapter(null);
    const baseLogits = tf.tidy(() => model.forward([ids]).dataSync() as Float32Array);
    model.dispose();
    lora.dispose();

    let maxDiff = 0;
    let maxFromBase = 0;
    for (const { position, expert } of served) {
      // The distribution at `position` is read from the logits of the token before it.
      const row = position - 1;
      const trainer = logSoftmax(logits, row * VOCAB, VOCAB);
      const base = logSoftmax(baseLogits, row * VOCAB, VOCAB);
      for (let a = 0; a < VOCAB; a++) {
        maxDiff = Math.max(maxDiff, Math.abs(expert[a] - trainer[a]));
        maxFromBase = Math.max(maxFromBase, Math.abs(expert[a] - base[a]));
      }
    }
    expect(served.length).toBe(ids.length);
    expect(maxDiff).toBeLessThan(1e-4);
    // Training must have moved the expert, or equality above would be trivial.
    expect(maxFromBase).toBeGreaterThan(1e-3);
  });
});
