// The inference service runs models in ONNX Runtime and the trainer runs the same models in
// TensorFlow.js; this is where the two are held against each other. Models come from
// init-model (the path users take), so the directory format is part of what is proven.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initModel } from "#core/model/init-model.ts";
import { loadModelDir } from "#core/formats/model-dir.ts";
import { readPeftAdapter, writePeftAdapter } from "#core/formats/peft.ts";
import { DEFAULT_LORA } from "#core/model/lora.ts";
import { SeededRandom } from "#core/math/random.ts";
import { exportOnnx } from "#inference/model/export.ts";
import { CausalLmSession } from "#inference/model/session.ts";
import { logSoftmaxRows } from "#inference/model/testing/compare.ts";
import { selectBackend } from "#trainer/model/backend.ts";
import { CausalLM } from "#trainer/model/transformer.ts";
import { LoraLayers } from "#trainer/model/lora.ts";

const SHAPE = { vocab_size: 320, hidden_size: 48, intermediate_size: 96, num_hidden_layers: 2, rms_norm_eps: 1e-6 };
const FAMILIES: Record<string, Record<string, unknown>> = {
  "llama, grouped-query attention, untied": { ...SHAPE, model_type: "llama", num_attention_heads: 6, num_key_value_heads: 2, rope_theta: 10000, tie_word_embeddings: false },
  "llama, tied, head_dim 16": { ...SHAPE, model_type: "llama", num_attention_heads: 4, num_key_value_heads: 4, head_dim: 16, tie_word_embeddings: true },
  "qwen2, q/k/v biases, tied": { ...SHAPE, model_type: "qwen2", num_attention_heads: 6, num_key_value_heads: 2, rope_theta: 1e6, tie_word_embeddings: true },
  "qwen2, q/k/v biases, untied": { ...SHAPE, model_type: "qwen2", num_attention_heads: 6, num_key_value_heads: 3, rope_theta: 1e6, tie_word_embeddings: false },
};

const TOKENS = [5, 17, 200, 3, 99, 250, 41, 7, 8, 300, 12];

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

async function onnxLogProbs(onnxPath: string, tokens: number[]): Promise<Float32Array> {
  const session = await CausalLmSession.open(onnxPath);
  const [result] = await session.step([{ cache: session.newCache(), tokens, allPositions: true }]);
  await session.release();
  return result.positionLogProbs!;
}

/** The TensorFlow.js model's log-probabilities at every position: its logits through logSoftmax. */
function tfjsLogProbs(model: CausalLM, tokens: number[]): Float32Array {
  const logits = tf.tidy(() => model.forward([tokens]).dataSync() as Float32Array);
  return logSoftmaxRows(logits, logits.length / tokens.length);
}

describe("ONNX Runtime and TensorFlow.js compute the same model", () => {
  const root = mkdtempSync(join(tmpdir(), "lr-parity-"));
  beforeAll(async () => {
    await selectBackend();
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  for (const [family, configJson] of Object.entries(FAMILIES)) {
    it(`${family}: log-probabilities agree to 1e-4`, async () => {
      const dir = join(root, family.replace(/\W+/g, "-"));
      await initModel({ configJson, seed: 7, outDir: dir });
      const { onnxPath } = await exportOnnx({ modelDir: dir });
      const { config, weights } = loadModelDir(dir);
      const model = new CausalLM(config, weights);
      const diff = maxAbsDiff(await onnxLogProbs(onnxPath, TOKENS), tfjsLogProbs(model, TOKENS));
      model.dispose();
      expect(diff).toBeLessThan(1e-4);
    });
  }

  it("export with --adapter equals the TensorFlow.js model with that adapter applied", async () => {
    const dir = join(root, "adapter-base");
    await initModel({ configJson: FAMILIES["qwen2, q/k/v biases, untied"], seed: 11, outDir: dir });
    const { config, weights } = loadModelDir(dir);
    // Give B real values: a freshly initialised adapter (B = 0) would not change anything.
    const lora = LoraLayers.create(config, { ...DEFAULT_LORA, targetModules: ["q_proj", "v_proj", "down_proj"] }, 3);
    const adapter = lora.toAdapter();
    const random = new SeededRandom(5);
    for (const pair of adapter.pairs.values()) for (let i = 0; i < pair.b.data.length; i++) pair.b.data[i] = 0.05 * random.normal();
    lora.dispose();
    const adapterDir = join(root, "adapter");
    writePeftAdapter(adapterDir, adapter, { baseModel: dir });

    const reloaded = LoraLayers.fromAdapter(config, readPeftAdapter(adapterDir, config));
    const model = new CausalLM(config, weights, { adapter: reloaded });
    const adapted = tfjsLogProbs(model, TOKENS);
    model.useAdapter(null);
    const base = tfjsLogProbs(model, TOKENS);
    model.dispose();
    reloaded.dispose();

    const { onnxPath } = await exportOnnx({ modelDir: dir, adapterDir, outPath: join(root, "merged.onnx") });
    const merged = await onnxLogProbs(onnxPath, TOKENS);
    expect(maxAbsDiff(merged, adapted)).toBeLessThan(1e-4);
    // The adapter must matter, or the comparison above proves nothing.
    expect(maxAbsDiff(merged, base)).toBeGreaterThan(1e-2);
  });
});
