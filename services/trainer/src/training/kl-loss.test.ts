import * as tf from "@tensorflow/tfjs";
import { beforeAll, describe, expect, it } from "vitest";
import { selectBackend } from "#trainer/model/backend.ts";
import { LoraLayers } from "#trainer/model/lora.ts";
import { CausalLM } from "#trainer/model/transformer.ts";
import { randomWeights, tinyConfig } from "#trainer/model/testing/tiny-model.ts";
import { softLabelKl, softLabelKlLoss } from "./kl-loss.ts";
import { forwardInputs } from "./training-loop.ts";
import type { SoftLabel, Trajectory } from "./trajectory.ts";

beforeAll(async () => {
  await selectBackend();
});

describe("softLabelKl", () => {
  const logits = () => tf.tensor2d([[0, 0, Math.log(2), 0], [1, 2, 3, 4], [0, 0, 0, 0]]);
  const labels: SoftLabel[] = [
    { ids: [2, 0], weights: [0.75, 0.25] },
    { ids: [3], weights: [1] },
    { ids: [1, 2], weights: [1, 0] },
  ];

  it("equals values worked out by hand, and batchmean is their mean", () => {
    // Row 0: q = [1, 1, 2, 1] / 5; KL = 0.75 ln(0.75 / 0.4) + 0.25 ln(0.25 / 0.2) = 0.4714565 + 0.0557859.
    // Row 1 (one-hot): -log q(3) = ln(e + e^2 + e^3 + e^4) - 4 = 4.4401897 - 4.
    // Row 2 (a zero weight adds nothing): -ln(1 / 4).
    const expected = [0.5272424, 0.4401897, 1.3862944];
    const perSample = softLabelKl(logits(), labels).arraySync();
    perSample.forEach((v, i) => expect(v).toBeCloseTo(expected[i], 6));
    expect(softLabelKlLoss(logits(), labels).dataSync()[0]).toBeCloseTo((0.5272424 + 0.4401897 + 1.3862944) / 3, 6);
    expect(softLabelKlLoss(logits(), labels, 6).dataSync()[0]).toBeCloseTo((0.5272424 + 0.4401897 + 1.3862944) / 6, 6);
  });

  it("its gradient in the logits is (softmax(z) - v) / n", () => {
    const z = logits();
    const grad = tf.grad((x: tf.Tensor) => softLabelKlLoss(x as tf.Tensor2D, labels))(z).arraySync() as number[][];
    const q = tf.softmax(z).arraySync();
    labels.forEach(({ ids, weights }, i) => {
      const v = [0, 0, 0, 0];
      ids.forEach((id, j) => (v[id] = weights[j]));
      grad[i].forEach((g, a) => expect(g).toBeCloseTo((q[i][a] - v[a]) / 3, 6));
    });
  });

  it("rejects a label count that does not match the rows", () => {
    expect(() => softLabelKl(logits(), labels.slice(1))).toThrow(/2 labels for 3 rows/);
    expect(() => softLabelKlLoss(logits(), labels, 0)).toThrow(/normaliser must be > 0/);
  });
});

describe("one forward per trajectory equals one forward per selected step", () => {
  /** Trajectories over the tiny vocabulary with targets at several steps, one at the very end. */
  function trajectories(vocab: number): Trajectory[] {
    const label = (position: number, ids: number[], weights: number[]) => ({ position, ids, weights });
    return [
      { tokenIds: [1, 5, 9, 14, 3, 22, 7, 30, 2], promptLength: 3, targets: [label(4, [3, 17], [0.6, 0.4]), label(6, [7], [1]), label(9, [11, 12, 13], [0.5, 0.3, 0.2])] },
      { tokenIds: [4, 8, 15, 16, 23], promptLength: 2, targets: [label(2, [15, 60], [0.9, 0.1])] },
      { tokenIds: [2, 40, 41, 42, 43, 44, 45], promptLength: 1, targets: [label(3, [42, vocab - 1], [0.5, 0.5]), label(5, [44], [1]), label(6, [45, 1], [0.7, 0.3])] },
    ];
  }

  it.each([
    ["LoRA on q_proj and v_proj", "llama untied", false],
    ["full-parameter, tied embeddings", "qwen2 tied", true],
  ] as const)("%s: loss and every gradient agree to 1e-5", (_, variant, trainBase) => {
    const config = tinyConfig(variant);
    const lora = trainBase ? null : LoraLayers.create(config, { rank: 4, alpha: 8, dropout: 0, targetModules: ["q_proj", "v_proj"] }, 5);
    // A non-zero B so the gradient reaches A too.
    for (const v of lora?.variables() ?? []) if (v.shape[1] === 4) v.assign(tf.randomNormal(v.shape, 0, 0.3, "float32", 9));
    const model = new CausalLM(config, randomWeights(config, 21), { trainBase, adapter: lora });
    const vars = model.trainableVariables();
    const data = trajectories(config.vocabSize);
    const samples = data.flatMap((t) => t.targets.map((target) => ({ tokens: t.tokenIds.slice(0, target.position), target })));

    const perStep = tf.variableGrads(() => {
      // The reference's way: every selected step is its own sequence, its loss at the last position.
      const kls = samples.map(({ tokens, target }) => softLabelKl(model.logitsAt([tokens], undefined, [[0, tokens.length - 1]]), [target]));
      return tf.div(tf.sum(tf.concat(kls)), samples.length) as tf.Scalar;
    }, vars);
    const batched = tf.variableGrads(() => {
      const { rows, positions, labels } = forwardInputs({ chunks: data.map((t) => ({ trajectory: t, targets: t.targets })), units: samples.length, cursor: { epoch: 0, index: 3, targetOffset: 0 } });
      return softLabelKlLoss(model.logitsAt(rows, undefined, positions), labels);
    }, vars);

    expect(batched.value.dataSync()[0]).toBeGreaterThan(0.5);
    expect(Math.abs(batched.value.dataSync()[0] - perStep.value.dataSync()[0])).toBeLessThan(1e-5);
    let largest = 0;
    let worst = 0;
    for (const v of vars) {
      const a = perStep.grads[v.name].dataSync();
      const b = batched.grads[v.name].dataSync();
      a.forEach((x, i) => {
        largest = Math.max(largest, Math.abs(x));
        worst = Math.max(worst, Math.abs(x - b[i]));
      });
    }
    expect(largest).toBeGreaterThan(1e-2);
    expect(worst).toBeLessThan(1e-5 * Math.max(1, largest));
    tf.dispose([perStep.value, batched.value, ...Object.values(perStep.grads), ...Object.values(batched.grads)]);
    model.dispose();
    lora?.dispose();
  });
});
