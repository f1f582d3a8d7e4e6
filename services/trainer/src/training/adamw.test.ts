import * as tf from "@tensorflow/tfjs";
import { beforeAll, describe, expect, it } from "vitest";
import { selectBackend } from "#trainer/model/backend.ts";
import { AdamW } from "./adamw.ts";
import { CheckpointError } from "./errors.ts";

beforeAll(async () => {
  await selectBackend();
});

const SETTINGS = { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.01 };

describe("AdamW", () => {
  it("matches two updates worked out by hand", () => {
    const p = tf.variable(tf.tensor1d([1, -2]));
    const opt = new AdamW([{ name: "p", variable: p }], SETTINGS);
    opt.apply([tf.tensor1d([0.5, 0.1])], 0.1);
    // Step 1 (t = 1), element 0: decay 1 * (1 - 0.1 * 0.01) = 0.999; m = 0.05, v = 0.00025;
    // m / (1 - 0.9) = 0.5, sqrt(v / (1 - 0.999)) = 0.5: the step is lr * 0.5 / 0.5 = 0.1 -> 0.899.
    // Element 1: -2 * 0.999 = -1.998; m = 0.01, v = 1e-5; 0.1 / 0.1 = 1 -> -2.098.
    expect(Array.from(p.dataSync())).toEqual([expect.closeTo(0.899, 6), expect.closeTo(-2.098, 6)]);
    opt.apply([tf.tensor1d([-1, 0.1])], 0.1);
    // Step 2 (t = 2), element 0: decay 0.899 * 0.999 = 0.898101; m = 0.9 * 0.05 - 0.1 = -0.055,
    // v = 0.999 * 0.00025 + 0.001 * 1 = 0.00124975; m-hat = -0.055 / 0.19 = -0.2894737,
    // v-hat = 0.00124975 / 0.001999 = 0.6251876, sqrt 0.7906881; step -0.3661035 * 0.1 -> 0.9347114.
    // Element 1: -2.098 * 0.999 = -2.095902; m-hat = 0.019 / 0.19 = 0.1, v-hat = 1.999e-5 / 0.001999 = 0.01 -> -2.195902.
    expect(Array.from(p.dataSync())).toEqual([expect.closeTo(0.9347114, 6), expect.closeTo(-2.195902, 6)]);
    expect(opt.step).toBe(2);
    opt.dispose();
    p.dispose();
  });

  it("spares the variables `decays` excludes from weight decay", () => {
    const a = tf.variable(tf.tensor1d([1]));
    const b = tf.variable(tf.tensor1d([1]));
    const opt = new AdamW([{ name: "a.weight", variable: a }, { name: "norm.weight", variable: b }], { ...SETTINGS, weightDecay: 0.5, decays: (n) => !n.startsWith("norm") });
    opt.apply([tf.tensor1d([0]), tf.tensor1d([0])], 0.1);
    // A zero gradient leaves only the decay: 1 * (1 - 0.1 * 0.5).
    expect(a.dataSync()[0]).toBeCloseTo(0.95, 7);
    expect(b.dataSync()[0]).toBe(1);
    opt.dispose();
  });

  it("a restored state continues exactly where the saved one was", () => {
    const grads = [[0.3, -0.7, 0.2], [-0.1, 0.4, 0.9], [0.5, 0.5, -0.5], [1, -1, 0.25]];
    const run = (split: number | null) => {
      let p = tf.variable(tf.tensor1d([0.1, 0.2, 0.3]));
      let opt = new AdamW([{ name: "w", variable: p }], SETTINGS);
      grads.forEach((g, i) => {
        if (i === split) {
          const saved = opt.state();
          const weights = p.dataSync().slice();
          opt.dispose();
          p.dispose();
          p = tf.variable(tf.tensor1d(weights));
          opt = new AdamW([{ name: "w", variable: p }], SETTINGS);
          opt.load(saved, "optimizer.safetensors");
        }
        tf.tidy(() => opt.apply([tf.tensor1d(g)], 0.01 * (i + 1)));
      });
      const out = Array.from(p.dataSync());
      opt.dispose();
      p.dispose();
      return out;
    };
    expect(run(2)).toEqual(run(null));
  });

  it("refuses a state that does not fit, naming the file and the variable", () => {
    const p = tf.variable(tf.tensor1d([1, 2]));
    const opt = new AdamW([{ name: "layer.w", variable: p }], SETTINGS);
    const m = new Float32Array(3);
    expect(() => opt.load({ step: 1, moments: new Map() }, "/ckpt/optimizer.safetensors")).toThrow(/\/ckpt\/optimizer.safetensors: has no optimizer moments for layer.w/);
    expect(() => opt.load({ step: 1, moments: new Map([["layer.w", { m, v: m }]]) }, "f")).toThrow(CheckpointError);
    expect(() => opt.load({ step: 1, moments: new Map([["layer.w", { m, v: m }]]) }, "f")).toThrow(/holds 3 values, the variable has 2/);
    opt.dispose();
    p.dispose();
  });

  it("leaves no tensors behind", () => {
    const p = tf.variable(tf.tensor2d([[1, 2], [3, 4]]));
    const before = tf.memory().numTensors;
    const opt = new AdamW([{ name: "p", variable: p }], SETTINGS);
    const g = tf.ones([2, 2]);
    for (let i = 0; i < 3; i++) opt.apply([g], 0.1);
    opt.load(opt.state(), "x");
    g.dispose();
    opt.dispose();
    expect(tf.memory().numTensors).toBe(before);
    p.dispose();
  });
});
