// Serving parity at a tiny shape: the same code as `scripts/serving-parity.mjs` at 0.5B (the
// served graph with a PEFT adapter read from disk against the trainer's ONNX Runtime engine
// with the same files), on a random tied-embedding qwen2 model and a random adapter whose B
// is not zero, so the adapter changes every distribution the comparison reads.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runServingParity, SERVING_TOLERANCE } from "#bench/serving-parity.ts";
import { writeModelDir } from "#core/formats/model-dir.ts";
import { writePeftAdapter } from "#core/formats/peft.ts";
import { SeededRandom } from "#core/math/random.ts";
import type { LoraAdapter, LoraSettings } from "#core/model/lora.ts";
import { loraTargets } from "#core/model/lora.ts";
import { randomWeights, tinyConfig, tinyConfigJson } from "#inference/model/testing/random-model.ts";

const overrides = { head_dim: 12, tie_word_embeddings: true };
const config = tinyConfig("qwen2", overrides);
const root = mkdtempSync(join(tmpdir(), "lr-serving-parity-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Dropout as a trained adapter's config has it: both sides must leave it off when scoring. */
function randomAdapter(seed: number): LoraAdapter {
  const rng = new SeededRandom(seed);
  const settings: LoraSettings = { rank: 4, alpha: 8, dropout: 0.05, targetModules: ["q_proj", "v_proj"] };
  const pairs = new Map();
  for (const { name, shape: [out, inFeatures] } of loraTargets(config, settings)) {
    const a = Float32Array.from({ length: 4 * inFeatures }, () => 0.2 * rng.normal());
    const b = Float32Array.from({ length: out * 4 }, () => 0.2 * rng.normal());
    pairs.set(name, { a: { shape: [4, inFeatures], data: a }, b: { shape: [out, 4], data: b } });
  }
  return { settings, pairs };
}

describe("serving parity", () => {
  it("the served expert with an adapter from disk equals the trainer engine's log-probabilities", async () => {
    const expertDir = join(root, "expert");
    const adapterDir = join(root, "adapter");
    writeModelDir(expertDir, { configJson: tinyConfigJson("qwen2", overrides), weights: randomWeights(config, 5) });
    writePeftAdapter(adapterDir, randomAdapter(6));
    const r = await runServingParity({ expertDir, adapterDir, prompts: 2, len: 9, positions: 3, topTokens: 3, randomTokens: 2, seed: 3, threads: 1, log: () => {} });
    expect(r.compared).toBe(2 * 3 * 5);
    // The adapter must move the values far more than the two sides may differ.
    expect(r.adapterEffect).toBeGreaterThan(0.05);
    expect(r.maxAbsDiff).toBeLessThan(1e-4);
    expect(r.pass).toBe(true);
    expect(r.tolerance).toBe(SERVING_TOLERANCE);
  });
});
