// The ONNX Runtime engine's hand-written backward against TensorFlow.js autodiff on the same
// model, adapter, batch and dropout masks: the loss and every LoRA gradient must agree.
import * as tf from "@tensorflow/tfjs";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { SeededRandom } from "#core/math/random.ts";
import type { LoraSettings } from "#core/model/lora.ts";
import { DEFAULT_LORA } from "#core/model/lora.ts";
import { softLabelKlLoss } from "#trainer/training/kl-loss.ts";
import { selectBackend } from "./backend.ts";
import { LoraLayers } from "./lora.ts";
import type { LabelDistribution } from "./onnx-lora-expert.ts";
import { OnnxLoraExpert } from "./onnx-lora-expert.ts";
import type { SelectedPosition } from "./transformer.ts";
import { CausalLM } from "./transformer.ts";
import { randomWeights, tinyConfig } from "./testing/tiny-model.ts";
import { ALL_MODULES, adapterWithNonZeroB } from "./testing/tiny-adapter.ts";



/** Right-padded rows, positions to read and soft labels of a few ids each. */
function microBatch(vocab: number, lengths: number[], seed: number) {
  const random = new SeededRandom(seed);
  const width = Math.max(...lengths);
  const rows = lengths.map((n) => Array.from({ length: width }, (_, t) => (t < n ? random.int(vocab) : 0)));
  const positions: SelectedPosition[] = [];
  const labels: LabelDistribution[] = [];
  lengths.forEach((n, row) => {
    for (const t of [n - 1, Math.floor(n / 2)]) {
      positions.push([row, t]);
      const ids = [random.int(vocab), random.int(vocab), random.int(vocab)].filter((v, i, all) => all.indexOf(v) === i);
      const raw = ids.map(() => random.next() + 0.1);
      const total = raw.reduce((a, b) => a + b, 0);
      labels.push({ ids, weights: raw.map((w) => w / total) });
    }
  });
  return { rows, positions, labels };
}

const relativeError = (got: Float32Array, want: Float32Array) => {
  let diff = 0;
  let size = 0;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(got[i] - want[i]));
    size = Math.max(size, Math.abs(want[i]));
  }
  return diff / size;
};

beforeAll(async () => {
  await selectBackend();
});

afterEach(() => {
  expect(Object.keys(tf.engine().registeredVariables)).toEqual([]);
});

describe("OnnxLoraExpert", () => {
  it.each([
    ["qwen2 tied", DEFAULT_LORA],
    ["llama tied, attention_bias, head_dim 16", ALL_MODULES],
    ["llama untied", { ...ALL_MODULES, dropout: 0 }],
  ] as const)("%s: loss and LoRA gradients equal TensorFlow.js autodiff's (%o)", async (variant, settings) => {
    const config = tinyConfig(variant);
    const weights = randomWeights(config, 31);
    const adapter = adapterWithNonZeroB(config, settings, 4);
    const { rows, positions, labels } = microBatch(config.vocabSize, [7, 4, 6], 12);
    const normaliser = labels.length * 2;

    const tfLayers = LoraLayers.fromAdapter(config, adapter, { seed: 9 });
    const model = new CausalLM(config, weights, { adapter: tfLayers });
    tfLayers.beginPass(); // pass 0 is skipped: the compared pass is 1, in both engines
    const variables = tfLayers.variables();
    const { value, grads } = tf.variableGrads(() => softLabelKlLoss(model.logitsAt(rows, undefined, positions, { training: true }), labels, normaliser), variables);
    const want = { loss: value.dataSync()[0], grads: variables.map((v) => grads[v.name].dataSync() as Float32Array) };

    const ortLayers = LoraLayers.fromAdapter(config, adapter, { seed: 9 });
    const expert = await OnnxLoraExpert.create(config, weights, settings);
    const got = await expert.lossAndGradients({ rows, positions, labels, normaliser, dropoutPass: 1 }, ortLayers);
    await expert.dispose();

    expect(Math.abs(got.loss - want.loss)).toBeLessThan(1e-5 * Math.max(1, Math.abs(want.loss)));
    let i = 0;
    for (const name of tfLayers.targets()) {
      const pair = got.grads.get(name)!;
      expect(relativeError(pair.a, want.grads[i++]), `${name} A`).toBeLessThan(1e-4);
      expect(relativeError(pair.b, want.grads[i++]), `${name} B`).toBeLessThan(1e-4);
    }
    tf.dispose([value, ...Object.values(grads)]);
    model.dispose();
    tfLayers.dispose();
    ortLayers.dispose();
  });

  it("runs a micro-batch over the token budget in groups of rows, with the same loss and gradients", async () => {
    const config = tinyConfig("qwen2 tied");
    const weights = randomWeights(config, 32);
    const settings = { ...DEFAULT_LORA, targetModules: ["q_proj", "v_proj", "down_proj"] as LoraSettings["targetModules"] };
    const layers = LoraLayers.fromAdapter(config, adapterWithNonZeroB(config, settings, 6), { seed: 3 });
    const { rows, positions, labels } = microBatch(config.vocabSize, [5, 8, 3, 6], 13);
    const input = { rows, positions, labels, normaliser: labels.length, dropoutPass: 2 };
    const whole = await OnnxLoraExpert.create(config, weights, settings);
    const grouped = await OnnxLoraExpert.create(config, weights, settings, { tokenBudget: 2 * 8 + 3 }); // two rows of 8 per pass
    const [a, b] = [await whole.lossAndGradients(input, layers), await grouped.lossAndGradients(input, layers)];
    expect(Math.abs(a.loss - b.loss)).toBeLessThan(1e-5);
    for (const [name, g] of a.grads) {
      expect(relativeError(b.grads.get(name)!.a, g.a), name).toBeLessThan(1e-5);
      expect(relativeError(b.grads.get(name)!.b, g.b), name).toBeLessThan(1e-5);
    }
    const tooSmall = await OnnxLoraExpert.create(config, weights, settings, { tokenBudget: 7 });
    await expect(tooSmall.lossAndGradients(input, layers)).rejects.toThrow(/rows: a row of 8 tokens exceeds the token budget of 7/);
    await Promise.all([whole.dispose(), grouped.dispose(), tooSmall.dispose()]);
    layers.dispose();
  });
  it("logProbsAt gives TensorFlow.js's log-softmax at the asked positions and ids, dropout off, and names bad queries", async () => {
    const config = tinyConfig("llama tied, attention_bias, head_dim 16");
    const weights = randomWeights(config, 33);
    const adapter = adapterWithNonZeroB(config, ALL_MODULES, 7);
    const layers = LoraLayers.fromAdapter(config, adapter, { seed: 2 });
    const { rows } = microBatch(config.vocabSize, [6, 6], 14);
    const positions: SelectedPosition[] = [[0, 5], [1, 2], [1, 5]];
    const model = new CausalLM(config, weights, { adapter: layers });
    const want = tf.tidy(() => tf.logSoftmax(model.logitsAt(rows, undefined, positions, { training: false })).arraySync() as number[][]);
    const ids = [0, 3, config.vocabSize - 1];
    const queries = positions.flatMap((position, k) => ids.map((id) => ({ position, id, want: want[k][id] })));
    const expert = await OnnxLoraExpert.create(config, weights, ALL_MODULES);
    const got = await expert.logProbsAt(rows, queries, layers);
    queries.forEach((q, i) => expect(Math.abs(got[i] - q.want), `${q.position} ${q.id}: ${got[i]} vs ${q.want}`).toBeLessThan(1e-5 * Math.max(1, Math.abs(q.want))));
    await expect(expert.logProbsAt(rows, [{ position: [2, 0], id: 1 }], layers)).rejects.toThrow(/queries\[0\]\.position: \[2, 0\] is outside the batch \[2, 6\]/);
    await expect(expert.logProbsAt(rows, [{ position: [0, 0], id: config.vocabSize }], layers)).rejects.toThrow(/queries\[0\]\.id/);
    await expert.dispose();
    model.dispose();
    layers.dispose();
  });
});
