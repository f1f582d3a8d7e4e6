import { existsSync, mkdtempSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { beforeAll, describe, expect, it } from "vitest";
import { writeModelDir } from "#core/formats/model-dir.ts";
import { writePeftAdapter } from "#core/formats/peft.ts";
import { SeededRandom } from "#core/math/random.ts";
import { ModelFormatError } from "#core/model/errors.ts";
import type { LoraAdapter, LoraPair, LoraSettings } from "#core/model/lora.ts";
import { loraTargets } from "#core/model/lora.ts";
import { exportOnnx } from "./export.ts";
import { CausalLmSession } from "./session.ts";
import { randomWeights, tinyConfig, tinyConfigJson } from "./testing/random-model.ts";
import { referenceLogits } from "#core/model/testing/reference-forward.ts";
import { flat, logSoftmaxRows, maxAbsDiff } from "./testing/compare.ts";

const configJson = tinyConfigJson("llama", { tie_word_embeddings: true, head_dim: 16 });
const config = tinyConfig("llama", { tie_word_embeddings: true, head_dim: 16 });
const weights = randomWeights(config, 77);
const TOKENS = [2, 7, 1, 8, 28, 18, 28];
let root: string;
let modelDir: string;

async function logProbsOf(path: string, tokens = TOKENS): Promise<Float32Array> {
  const session = await CausalLmSession.open(path, { executionProvider: "cpu" });
  const [r] = await session.step([{ cache: session.newCache(), tokens, allPositions: true }]);
  await session.release();
  return r.positionLogProbs!;
}

/** The float64 reference forward's log-probabilities at every position of TOKENS. */
const referenceLogProbs = (adapter?: LoraAdapter) => logSoftmaxRows(flat(referenceLogits(config, weights, TOKENS, adapter)), config.vocabSize);

function randomAdapter(seed: number): LoraAdapter {
  const settings: LoraSettings = { rank: 4, alpha: 8, dropout: 0, targetModules: ["q_proj", "v_proj", "down_proj"] };
  const rng = new SeededRandom(seed);
  const fill = (n: number, std: number) => Float32Array.from({ length: n }, () => std * rng.normal());
  const pairs = new Map<string, LoraPair>();
  for (const { name, shape: [out, inF] } of loraTargets(config, settings)) {
    pairs.set(name, { a: { shape: [4, inF], data: fill(4 * inF, 0.2) }, b: { shape: [out, 4], data: fill(out * 4, 0.2) } });
  }
  return { settings, pairs };
}

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "lr-export-"));
  modelDir = join(root, "model");
  writeModelDir(modelDir, { configJson, weights });
});

describe("exportOnnx", () => {
  it("writes <model-dir>/onnx/model.onnx that matches the reference forward", async () => {
    const result = await exportOnnx({ modelDir });
    expect(result.onnxPath).toBe(join(modelDir, "onnx", "model.onnx"));
    expect(result.externalDataPath).toBeUndefined();
    expect(result).toMatchObject({ modelType: "llama", numLayers: 2, adapterMerged: false });
    expect(maxAbsDiff(await logProbsOf(result.onnxPath), referenceLogProbs())).toBeLessThan(1e-4);
  });

  it("keeps Optimum's logits output beside log_probs, for tools outside this project", async () => {
    const { onnxPath } = await exportOnnx({ modelDir, outPath: join(root, "outputs", "model.onnx") });
    const session = await ort.InferenceSession.create(onnxPath);
    expect(session.outputNames.filter((name) => !name.startsWith("new_key_values."))).toEqual(["logits", "log_probs"]);
    await session.release();
  });

  it("puts the weights in an external data file above the threshold, with identical results", async () => {
    const inline = await exportOnnx({ modelDir, outPath: join(root, "inline", "model.onnx") });
    const external = await exportOnnx({ modelDir, outPath: join(root, "external", "model.onnx"), externalDataThreshold: 0 });
    expect(external.externalDataPath).toBe(join(root, "external", "model.onnx.data"));
    expect(existsSync(external.externalDataPath!)).toBe(true);
    expect(statSync(external.onnxPath).size).toBeLessThan(external.weightBytes / 4);
    expect(statSync(external.externalDataPath!).size).toBeGreaterThan(0.9 * external.weightBytes);
    expect(maxAbsDiff(await logProbsOf(external.onnxPath), await logProbsOf(inline.onnxPath))).toBe(0);
  });

  it("with --adapter equals the base model with the LoRA update applied (unmerged, in float64)", async () => {
    const adapter = randomAdapter(5);
    const adapterDir = join(root, "adapter");
    writePeftAdapter(adapterDir, adapter);
    const result = await exportOnnx({ modelDir, adapterDir, outPath: join(root, "merged", "model.onnx") });
    expect(result.adapterMerged).toBe(true);
    const logProbs = await logProbsOf(result.onnxPath);
    expect(maxAbsDiff(logProbs, referenceLogProbs(adapter))).toBeLessThan(1e-4);
    expect(maxAbsDiff(logProbs, referenceLogProbs())).toBeGreaterThan(1e-2);
  });

  it("fails with the file named for a missing model or adapter directory", async () => {
    await expect(exportOnnx({ modelDir: join(root, "absent") })).rejects.toThrow(ModelFormatError);
    await expect(exportOnnx({ modelDir, adapterDir: join(root, "no-adapter") })).rejects.toThrow(/no-adapter: adapter directory does not exist/);
  });
});
