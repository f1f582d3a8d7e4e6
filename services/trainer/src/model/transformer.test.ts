import * as tf from "@tensorflow/tfjs";
import { beforeAll, describe, expect, it } from "vitest";
import { ModelFormatError } from "#core/model/errors.ts";
import type { WeightMap } from "#core/model/weights.ts";
import type { BackendKind } from "./backend.ts";
import { missingKernels, selectBackend } from "./backend.ts";
import { ModelInputError } from "./inputs.ts";
import { LoraLayers } from "./lora.ts";
import { CausalLM } from "./transformer.ts";
import { referenceBatchLogits } from "#core/model/testing/reference-forward.ts";
import { leftPaddedBatch, randomWeights, TINY_VARIANTS, tinyConfig } from "./testing/tiny-model.ts";

const VARIANTS = Object.keys(TINY_VARIANTS);

/** Largest |tf - reference| over the real positions of a batch. */
function maxDiffToReference(logits: tf.Tensor3D, reference: (Float64Array | null)[][]): number {
  const got = logits.arraySync();
  let worst = 0;
  reference.forEach((row, b) =>
    row.forEach((ref, t) => {
      if (ref) ref.forEach((v, i) => (worst = Math.max(worst, Math.abs(got[b][t][i] - v))));
    }),
  );
  return worst;
}

let best: BackendKind;
beforeAll(async () => {
  best = (await selectBackend()).kind;
});

// Best available backend (wasm here) and the pure-JS one, so a kernel bug in either shows.
describe.each(["best", "cpu"] as const)("CausalLM forward on %s backend", (which) => {
  beforeAll(async () => {
    await selectBackend({ force: which === "best" ? best : "cpu" });
  });

  it.each(VARIANTS)("%s: logits equal the float64 reference to 1e-4", (variant) => {
    const config = tinyConfig(variant);
    const weights = randomWeights(config, 11);
    const model = new CausalLM(config, weights);
    const { ids } = leftPaddedBatch([9, 9], config.vocabSize, 3);
    const logits = model.forward(ids);
    const diff = maxDiffToReference(logits, referenceBatchLogits(config, weights, ids));
    // The bound only means something if the logits are not tiny.
    expect(tf.max(tf.abs(logits)).dataSync()[0]).toBeGreaterThan(1);
    expect(diff).toBeLessThan(1e-4);
    logits.dispose();
    model.dispose();
  });

  it.each(VARIANTS)("%s: a left-padded batch equals each sequence alone", (variant) => {
    const config = tinyConfig(variant);
    const weights = randomWeights(config, 12);
    const model = new CausalLM(config, weights);
    const { ids, mask, rows } = leftPaddedBatch([3, 10, 6], config.vocabSize, 4);
    const batched = model.forward(ids, mask);
    expect(maxDiffToReference(batched, referenceBatchLogits(config, weights, ids, mask))).toBeLessThan(1e-4);
    const got = batched.arraySync();
    rows.forEach((row, b) => {
      const alone = model.forward([row]);
      const pad = ids[b].length - row.length;
      const aloneLogits = alone.arraySync()[0];
      let worst = 0;
      aloneLogits.forEach((v, t) => v.forEach((x, i) => (worst = Math.max(worst, Math.abs(x - got[b][pad + t][i])))));
      expect(worst).toBeLessThan(1e-5);
      alone.dispose();
    });
    batched.dispose();
    model.dispose();
  });
});

describe("CausalLM API", () => {
  beforeAll(async () => {
    await selectBackend({ force: best });
  });

  it("logitsAt returns the forward logits at the chosen positions", () => {
    const config = tinyConfig("qwen2 tied");
    const model = new CausalLM(config, randomWeights(config, 13));
    const { ids, mask } = leftPaddedBatch([4, 7], config.vocabSize, 5);
    const positions = [[1, 6], [0, 3], [1, 2]] as const;
    const full = model.forward(ids, mask).arraySync();
    const some = model.logitsAt(ids, mask, positions);
    expect(some.shape).toEqual([3, config.vocabSize]);
    some.arraySync().forEach((row, i) => {
      const [b, t] = positions[i];
      row.forEach((v, j) => expect(Math.abs(v - full[b][t][j])).toBeLessThan(1e-6));
    });
    some.dispose();
    model.dispose();
  });

  it("explicit position ids drive RoPE like the ONNX position_ids input", () => {
    const config = tinyConfig("llama untied");
    const model = new CausalLM(config, randomWeights(config, 14));
    const ids = [[5, 6, 7]];
    const counted = model.forward(ids).arraySync()[0];
    const same = model.forward(ids, undefined, { positionIds: [[0, 1, 2]] }).arraySync()[0];
    // RoPE sees only relative positions: a uniform shift changes nothing, a gap does.
    const shifted = model.forward(ids, undefined, { positionIds: [[7, 8, 9]] }).arraySync()[0];
    const gap = model.forward(ids, undefined, { positionIds: [[0, 1, 5]] }).arraySync()[0];
    const diff = (a: number[], b: number[]) => Math.max(...a.map((v, i) => Math.abs(v - b[i])));
    expect(same).toEqual(counted);
    expect(diff(shifted[2], counted[2])).toBeLessThan(1e-4);
    expect(diff(gap[1], counted[1])).toBe(0);
    expect(diff(gap[2], counted[2])).toBeGreaterThan(1e-3);
    model.dispose();
  });

  it("leaves no tensors behind", () => {
    const config = tinyConfig("qwen2 untied");
    const model = new CausalLM(config, randomWeights(config, 15));
    const before = tf.memory().numTensors;
    model.forward([[1, 2, 3]]).dispose();
    model.logitsAt([[1, 2, 3]], undefined, [[0, 2]]).dispose();
    expect(tf.memory().numTensors).toBe(before);
    model.dispose();
  });

  it("rejects malformed batches with the field named", () => {
    const config = tinyConfig("llama untied");
    const model = new CausalLM(config, randomWeights(config, 16));
    const bad = (f: () => unknown, field: string, text: RegExp) => {
      try {
        f();
      } catch (err) {
        expect(err).toBeInstanceOf(ModelInputError);
        expect((err as ModelInputError).field).toBe(field);
        expect((err as Error).message).toMatch(text);
        return;
      }
      throw new Error("expected a ModelInputError");
    };
    bad(() => model.forward([]), "input_ids", /non-empty/);
    bad(() => model.forward([[1, 2], [3]]), "input_ids", /row 1 has length 1, expected 2/);
    bad(() => model.forward([[1, 64]]), "input_ids", /\[0\]\[1\] is 64; expected token ids in \[0, 64\)/);
    bad(() => model.forward([[1, 2]], [[1]]), "attention_mask", /row 0 has length 1/);
    bad(() => model.forward([[1, 2]], [[1, 2]]), "attention_mask", /0 or 1/);
    bad(() => model.logitsAt([[1, 2]], undefined, [[0, 2]]), "positions", /outside the batch \[1, 2\]/);
    model.dispose();
  });

  it("rejects weights that do not fit the config, naming the tensor", () => {
    const config = tinyConfig("qwen2 untied");
    const weights = randomWeights(config, 17);
    const missing: WeightMap = new Map(weights);
    missing.delete("model.layers.1.self_attn.k_proj.bias");
    expect(() => new CausalLM(config, missing, { source: "/models/x" })).toThrow(ModelFormatError);
    expect(() => new CausalLM(config, missing, { source: "/models/x" })).toThrow(/\/models\/x: tensor model.layers.1.self_attn.k_proj.bias is missing/);
    const wrong: WeightMap = new Map(weights);
    wrong.set("model.layers.0.mlp.up_proj.weight", { shape: [32, 48], data: new Float32Array(32 * 48) });
    expect(() => new CausalLM(config, wrong)).toThrow(/up_proj.weight has shape \[32, 48\], config implies \[48, 32\]/);
  });

  it("full-parameter mode trains every weight, embeddings included", () => {
    const config = tinyConfig("llama tied, attention_bias, head_dim 16");
    const weights = randomWeights(config, 18);
    const model = new CausalLM(config, weights, { trainBase: true });
    const vars = model.trainableVariables();
    expect(vars.length).toBe(weights.size);
    const ids = [[3, 9, 3, 27, 5]];
    const nextTokens = [9, 3, 27, 5];
    const loss = () =>
      tf.tidy(() => {
        const logits = model.logitsAt(ids, undefined, nextTokens.map((_, t) => [0, t] as const));
        return tf.losses.softmaxCrossEntropy(tf.oneHot(nextTokens, config.vocabSize), logits) as tf.Scalar;
      });
    const optimizer = tf.train.adam(1e-2);
    const start = loss().dataSync()[0];
    for (let i = 0; i < 5; i++) optimizer.minimize(loss, false, vars);
    expect(loss().dataSync()[0]).toBeLessThan(start * 0.8);
    const trained = model.exportWeights();
    const embed = "model.embed_tokens.weight";
    const row = (m: WeightMap, id: number) => m.get(embed)!.data.slice(id * 32, (id + 1) * 32);
    expect(row(trained, 27)).not.toEqual(row(weights, 27)); // an input token's row moved
    optimizer.dispose();
    model.dispose();
  });
});

describe("checkpointed blocks", () => {
  beforeAll(async () => {
    await selectBackend({ force: best });
  });

  const ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;

  /** Loss, gradients and the bytes held when the forward returns, for one setting. */
  function lossAndGrads(variant: string, trainBase: boolean, checkpoint: boolean) {
    const config = tinyConfig(variant);
    const lora = trainBase ? null : LoraLayers.create(config, { rank: 4, alpha: 8, dropout: 0.2, targetModules: [...ALL] }, 3);
    if (lora) {
      // Non-zero B, so the gradient reaches A as well.
      for (const v of lora.variables((n) => n.includes("proj"))) if (v.shape[1] === 4) v.assign(tf.randomNormal(v.shape, 0, 0.2, "float32", 4));
    }
    const model = new CausalLM(config, randomWeights(config, 20), { trainBase, adapter: lora });
    const { ids, mask } = leftPaddedBatch([5, 9], config.vocabSize, 7);
    let heldBytes = 0;
    const { value, grads } = tf.variableGrads(() => {
      const logits = model.logitsAt(ids, mask, [[0, 8], [1, 3], [1, 8]], { training: true, checkpoint });
      heldBytes = tf.memory().numBytes;
      return tf.sum(tf.mul(tf.logSoftmax(logits), tf.linspace(0, 1, config.vocabSize))) as tf.Scalar;
    }, model.trainableVariables());
    const out = {
      loss: value.dataSync()[0],
      grads: model.trainableVariables().map((v) => Array.from(grads[v.name].dataSync())),
      heldBytes,
    };
    tf.dispose([value, ...Object.values(grads)]);
    model.dispose();
    lora?.dispose();
    return out;
  }

  it.each([
    ["LoRA on every module, with dropout", "qwen2 untied", false],
    ["full-parameter, tied embeddings", "llama tied, attention_bias, head_dim 16", true],
  ] as const)("%s: same loss and gradients, less memory held", (_, variant, trainBase) => {
    const plain = lossAndGrads(variant, trainBase, false);
    const recomputed = lossAndGrads(variant, trainBase, true);
    expect(recomputed.loss).toBeCloseTo(plain.loss, 5);
    expect(recomputed.grads.length).toBe(plain.grads.length);
    let worst = 0;
    let largest = 0;
    plain.grads.forEach((g, i) => g.forEach((v, j) => {
      worst = Math.max(worst, Math.abs(v - recomputed.grads[i][j]));
      largest = Math.max(largest, Math.abs(v));
    }));
    expect(largest).toBeGreaterThan(1e-3);
    expect(worst).toBeLessThan(1e-5 * Math.max(1, largest));
    expect(recomputed.heldBytes).toBeLessThan(plain.heldBytes);
  });
});

describe("kernel coverage", () => {
  it("every kernel of a LoRA step and a full-parameter step exists on wasm and cpu", async () => {
    // Profile on cpu (it has every kernel), then ask the other backends for each name.
    await import("@tensorflow/tfjs-backend-wasm"); // registers the wasm kernels whichever backend runs
    await selectBackend({ force: "cpu" });
    const config = tinyConfig("qwen2 untied");
    const lora = LoraLayers.create(config, { rank: 4, alpha: 8, dropout: 0.1, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] }, 1);
    const model = new CausalLM(config, randomWeights(config, 19), { adapter: lora });
    const full = new CausalLM(config, randomWeights(config, 19), { trainBase: true });
    const { ids, mask } = leftPaddedBatch([3, 5], config.vocabSize, 6);
    const step = (m: CausalLM) => {
      const opt = tf.train.adam(1e-3);
      opt.minimize(() => tf.tidy(() => tf.sum(tf.logSoftmax(m.logitsAt(ids, mask, [[0, 4], [1, 2]], { training: true })))) as tf.Scalar, false, m.trainableVariables());
      opt.dispose();
    };
    const profiled = [...(await tf.profile(() => step(model))).kernelNames, ...(await tf.profile(() => step(full))).kernelNames];
    // The profile also lists custom-gradient scopes (logSoftmax, gatherRows), which are not kernels.
    const names = profiled.filter((n) => tf.getKernel(n, "cpu") !== undefined);
    expect(new Set(profiled.filter((n) => !names.includes(n)))).toEqual(new Set(["logSoftmax__op", "unnamed scope"]));
    expect(names).toEqual(expect.arrayContaining(["BatchMatMul", "ScatterNd", "GatherV2", "Softmax", "Rsqrt", "Sigmoid", "SplitV", "Concat"]));
    expect(missingKernels(names, "wasm")).toEqual([]);
    model.dispose();
    full.dispose();
    lora.dispose();
    await selectBackend({ force: best });
  });
});
