import * as tf from "@tensorflow/tfjs";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { ModelFormatError } from "#core/model/errors.ts";
import type { LoraAdapter } from "#core/model/lora.ts";
import { DEFAULT_LORA, mergeLora } from "#core/model/lora.ts";
import type { WeightMap } from "#core/model/weights.ts";
import { selectBackend } from "./backend.ts";
import { LoraLayers } from "./lora.ts";
import { CausalLM } from "./transformer.ts";
import { referenceBatchLogits } from "#core/model/testing/reference-forward.ts";
import { leftPaddedBatch, randomWeights, tinyConfig } from "./testing/tiny-model.ts";
import { ALL_MODULES, adapterWithNonZeroB } from "./testing/tiny-adapter.ts";



function maxDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
}

/** Copies of every weight's bytes, to prove later that nothing wrote to them. */
function snapshot(weights: WeightMap): Map<string, Uint8Array> {
  return new Map([...weights].map(([name, t]) => [name, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength).slice()]));
}

beforeAll(async () => {
  await selectBackend();
});

afterEach(() => {
  // Later tests count registered variables; every test must free what it made.
  expect(Object.keys(tf.engine().registeredVariables)).toEqual([]);
});

describe("LoraLayers", () => {
  it("initialises like PEFT: A uniform within 1/sqrt(in), B zero, so the model is unchanged", () => {
    const config = tinyConfig("llama tied, attention_bias, head_dim 16");
    const weights = randomWeights(config, 21);
    const layers = LoraLayers.create(config, DEFAULT_LORA, 7);
    expect(layers.targets()).toEqual([
      "model.layers.0.self_attn.q_proj.weight",
      "model.layers.0.self_attn.v_proj.weight",
      "model.layers.1.self_attn.q_proj.weight",
      "model.layers.1.self_attn.v_proj.weight",
    ]);
    const adapter = layers.toAdapter();
    const q = adapter.pairs.get("model.layers.0.self_attn.q_proj.weight")!;
    expect(q.a.shape).toEqual([8, 32]);
    expect(q.b.shape).toEqual([64, 8]); // 4 heads x head_dim 16
    const bound = 1 / Math.sqrt(32);
    expect(Math.max(...q.a.data.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...q.a.data.map(Math.abs))).toBeGreaterThan(0.8 * bound);
    expect(q.b.data.every((v) => v === 0)).toBe(true);
    // Same seed, same A; another seed, another A.
    const again = LoraLayers.create(config, DEFAULT_LORA, 7);
    const other = LoraLayers.create(config, DEFAULT_LORA, 8);
    expect(again.toAdapter().pairs.get("model.layers.0.self_attn.q_proj.weight")!.a.data).toEqual(q.a.data);
    expect(other.toAdapter().pairs.get("model.layers.0.self_attn.q_proj.weight")!.a.data).not.toEqual(q.a.data);

    const base = new CausalLM(config, weights);
    const adapted = new CausalLM(config, weights, { adapter: layers });
    const ids = [[1, 5, 9, 13]];
    const [x, y] = [base.forward(ids), adapted.forward(ids)];
    expect(maxDiff(x, y)).toBe(0);
    tf.dispose([x, y]);
    for (const m of [base, adapted]) m.dispose();
    for (const l of [layers, again, other]) l.dispose();
  });

  it.each(["qwen2 untied", "llama tied, attention_bias, head_dim 16"] as const)(
    "%s: with non-zero B the adapted model equals the merged weights",
    (variant) => {
      const config = tinyConfig(variant);
      const weights = randomWeights(config, 22);
      for (const settings of [DEFAULT_LORA, ALL_MODULES]) {
        const adapter = adapterWithNonZeroB(config, settings, 5);
        const layers = LoraLayers.fromAdapter(config, adapter);
        const adapted = new CausalLM(config, weights, { adapter: layers });
        const merged = mergeLora(weights, adapter);
        const mergedModel = new CausalLM(config, merged);
        const { ids, mask } = leftPaddedBatch([5, 8], config.vocabSize, 9);
        const [a, m, plain] = [adapted.forward(ids, mask), mergedModel.forward(ids, mask), new CausalLM(config, weights)];
        const base = plain.forward(ids, mask);
        expect(maxDiff(a, m)).toBeLessThan(1e-4);
        expect(maxDiff(a, base)).toBeGreaterThan(1e-2); // the adapter does change the model
        // And both agree with the float64 reference on the merged weights.
        const ref = referenceBatchLogits(config, merged, ids, mask);
        const got = a.arraySync();
        ref.forEach((row, b) => row.forEach((r, t) => r?.forEach((v, i) => expect(Math.abs(got[b][t][i] - v)).toBeLessThan(1e-4))));
        tf.dispose([a, m, base]);
        for (const model of [adapted, mergedModel, plain]) model.dispose();
        layers.dispose();
      }
    },
  );

  it("round-trips through LoraAdapter bit for bit", () => {
    const config = tinyConfig("qwen2 tied");
    const adapter = adapterWithNonZeroB(config, ALL_MODULES, 3);
    const layers = LoraLayers.fromAdapter(config, adapter);
    const back = layers.toAdapter();
    expect(back.settings).toEqual(adapter.settings);
    expect([...back.pairs.keys()]).toEqual([...adapter.pairs.keys()]);
    for (const [name, pair] of adapter.pairs) {
      expect(back.pairs.get(name)!.a.data).toEqual(pair.a.data);
      expect(back.pairs.get(name)!.b.data).toEqual(pair.b.data);
    }
    layers.dispose();
  });

  it("applies seeded dropout only when training", () => {
    const config = tinyConfig("qwen2 untied");
    const weights = randomWeights(config, 23);
    const adapter = adapterWithNonZeroB(config, { ...DEFAULT_LORA, dropout: 0.5 }, 4);
    const run = (seed: number) => {
      const layers = LoraLayers.fromAdapter(config, adapter, { seed });
      const model = new CausalLM(config, weights, { adapter: layers });
      const ids = [[2, 4, 6, 8]];
      const out = [model.forward(ids), model.forward(ids, undefined, { training: true }), model.forward(ids, undefined, { training: true })];
      model.dispose();
      layers.dispose();
      return out;
    };
    const [evalA, trainA1, trainA2] = run(1);
    const [evalB, trainB1] = run(1);
    const [, trainC1] = run(2);
    expect(maxDiff(evalA, evalB)).toBe(0);
    expect(maxDiff(trainA1, evalA)).toBeGreaterThan(1e-3);
    expect(maxDiff(trainA1, trainA2)).toBeGreaterThan(1e-3); // a fresh mask each pass
    expect(maxDiff(trainA1, trainB1)).toBe(0); // replayable from the seed
    expect(maxDiff(trainA1, trainC1)).toBeGreaterThan(1e-3);
    tf.dispose([evalA, trainA1, trainA2, evalB, trainB1, trainC1]);
  });

  it("a few Adam steps on a soft-label KL target lower the loss and leave every base weight bit-identical", () => {
    const config = tinyConfig("qwen2 untied");
    const weights = randomWeights(config, 24);
    const before = snapshot(weights);
    const layers = LoraLayers.create(config, DEFAULT_LORA, 9);
    const model = new CausalLM(config, weights, { adapter: layers });
    const tfBefore = snapshot(model.exportWeights());

    // A contrastive soft label over a handful of tokens at one position, zero elsewhere.
    const ids = [[0, 0, 7, 19, 33, 2, 41]];
    const mask = [[0, 0, 1, 1, 1, 1, 1]];
    const target = new Float32Array(config.vocabSize);
    [[11, 0.5], [3, 0.3], [40, 0.2]].forEach(([token, p]) => (target[token] = p));
    const targetT = tf.tensor2d(target, [1, config.vocabSize]);
    const loss = (training: boolean) =>
      tf.tidy(() => {
        const logProbs = tf.logSoftmax(model.logitsAt(ids, mask, [[0, 6]], { training }));
        const plogp = tf.mul(targetT, tf.log(tf.maximum(targetT, 1e-30)));
        return tf.sum(tf.sub(plogp, tf.mul(targetT, logProbs))) as tf.Scalar;
      });
    const lossValue = () => {
      const t = loss(false);
      const v = t.dataSync()[0];
      t.dispose();
      return v;
    };
    const start = lossValue();

    const optimizer = tf.train.adam(1e-2);
    // No variable list: the only trainable variables that exist are the adapter's.
    const { value, grads } = tf.variableGrads(() => loss(true));
    expect(Object.keys(grads).sort()).toEqual(layers.variables().map((v) => v.name).sort());
    tf.dispose([value, ...Object.values(grads)]);
    const tensorsBefore = tf.memory().numTensors;
    for (let step = 0; step < 8; step++) optimizer.minimize(() => loss(true));
    // Adam's moment slots are the only tensors the steps may leave behind.
    expect(tf.memory().numTensors - tensorsBefore).toBe(2 * layers.variables().length);
    const end = lossValue();
    expect(end).toBeLessThan(0.7 * start);
    console.log(`KL loss ${start.toFixed(4)} -> ${end.toFixed(4)} after 8 Adam steps`);

    expect(snapshot(weights)).toEqual(before);
    expect(snapshot(model.exportWeights())).toEqual(tfBefore);
    const trained = layers.toAdapter();
    for (const { a, b } of trained.pairs.values()) {
      expect(b.data.some((v) => v !== 0)).toBe(true);
      expect(a.data.length).toBeGreaterThan(0);
    }
    optimizer.dispose();
    targetT.dispose();
    model.dispose();
    layers.dispose();
  });

  it("rejects settings and adapters that do not fit the model, naming the problem", () => {
    const config = tinyConfig("qwen2 untied");
    const expectError = (f: () => unknown, text: RegExp) => {
      expect(f).toThrow(ModelFormatError);
      expect(f).toThrow(text);
    };
    expectError(() => LoraLayers.create(config, { ...DEFAULT_LORA, rank: 0 }), /LoRA settings: rank \(r\) must be a positive integer, got 0/);
    expectError(() => LoraLayers.create(config, { ...DEFAULT_LORA, dropout: 1 }), /dropout.*\[0, 1\)/);
    expectError(() => LoraLayers.create(config, { ...DEFAULT_LORA, targetModules: ["qkv_proj" as never] }), /target module "qkv_proj" is not one of/);

    const adapter = adapterWithNonZeroB(config, DEFAULT_LORA, 1);
    const wrongRank: LoraAdapter = { settings: { ...adapter.settings, rank: 4 }, pairs: adapter.pairs };
    expectError(() => LoraLayers.fromAdapter(config, wrongRank, { source: "/runs/a" }), /\/runs\/a: .*q_proj.weight lora_A has shape \[8, 32\], expected \[4, 32\]/);
    const missing: LoraAdapter = { settings: adapter.settings, pairs: new Map([...adapter.pairs].slice(1)) };
    expectError(() => LoraLayers.fromAdapter(config, missing), /has no LoRA pair for model.layers.0.self_attn.q_proj.weight/);
    const extra: LoraAdapter = { settings: { ...adapter.settings, targetModules: ["q_proj"] }, pairs: adapter.pairs };
    expectError(() => LoraLayers.fromAdapter(config, extra), /v_proj.weight, which is not among its target modules/);

    // An adapter made for a model with another width does not attach.
    const wide = tinyConfig("llama tied, attention_bias, head_dim 16");
    const layers = LoraLayers.create(wide, DEFAULT_LORA, 1);
    const model = new CausalLM(config, randomWeights(config, 1));
    expectError(() => model.useAdapter(layers), /q_proj.weight does not fit this model's weight \[32, 32\]/);
    model.dispose();
    layers.dispose();
  });
});
