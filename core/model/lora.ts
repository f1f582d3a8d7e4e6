// LoRA adapters as data: the settings (one source of truth for their defaults), the A and B
// matrices keyed by the weight they adapt, and merging them into base weights. The
// TensorFlow.js trainer applies them unmerged; the ONNX exporter merges them.
import type { Float32Tensor, LinearModule, WeightMap } from "./weights.ts";
import { linearShape, linearWeightName } from "./weights.ts";
import type { ModelConfig } from "./config.ts";
import { SeededRandom } from "#core/math/random.ts";

export interface LoraSettings {
  rank: number;
  alpha: number;
  dropout: number;
  targetModules: LinearModule[];
}

/** The method's reference settings (see METHOD.md, stage 2). */
export const DEFAULT_LORA: Readonly<LoraSettings> = Object.freeze({
  rank: 8,
  alpha: 16,
  dropout: 0.05,
  targetModules: ["q_proj", "v_proj"] as LinearModule[],
});

export interface LoraPair {
  /** [rank, in_features] */
  a: Float32Tensor;
  /** [out_features, rank] */
  b: Float32Tensor;
}

export interface LoraAdapter {
  settings: LoraSettings;
  /** Keyed by the adapted weight's name, e.g. `model.layers.0.self_attn.q_proj.weight`. */
  pairs: Map<string, LoraPair>;
}

/** The effective weight is W + (alpha / rank) * B A. */
export const loraScale = (s: LoraSettings) => s.alpha / s.rank;

/** Every (layer, module) an adapter with these settings covers on this model. */
export function loraTargets(config: ModelConfig, settings: LoraSettings): { layer: number; module: LinearModule; name: string; shape: [number, number] }[] {
  const out = [];
  for (let layer = 0; layer < config.numLayers; layer++) {
    for (const module of settings.targetModules) {
      out.push({ layer, module, name: linearWeightName(layer, module), shape: linearShape(config, module) });
    }
  }
  return out;
}

/**
 * An adapter with every A and B drawn from N(0, std^2), seeded: B is non-zero (a freshly
 * initialised PEFT adapter's is zero and changes nothing), so tests and benchmarks get an
 * adapter that really moves the model.
 */
export function randomLoraAdapter(config: ModelConfig, seed: number, settings: LoraSettings, std = 0.3): LoraAdapter {
  const rng = new SeededRandom(seed);
  const random = (n: number) => Float32Array.from({ length: n }, () => std * rng.normal());
  const pairs = new Map<string, LoraPair>();
  for (const { name, shape: [out, inFeatures] } of loraTargets(config, settings)) {
    pairs.set(name, { a: { shape: [settings.rank, inFeatures], data: random(settings.rank * inFeatures) }, b: { shape: [out, settings.rank], data: random(out * settings.rank) } });
  }
  return { settings, pairs };
}

/** Returns a new weight map with each adapted weight replaced by W + scale * B A. */
export function mergeLora(weights: WeightMap, adapter: LoraAdapter): WeightMap {
  const merged: WeightMap = new Map(weights);
  const scale = loraScale(adapter.settings);
  for (const [name, { a, b }] of adapter.pairs) {
    const base = weights.get(name);
    if (!base) throw new Error(`LoRA adapter targets ${name}, which the model does not have`);
    const [out, inFeatures] = base.shape;
    const rank = a.shape[0];
    const data = Float32Array.from(base.data);
    for (let o = 0; o < out; o++) {
      for (let r = 0; r < rank; r++) {
        const coef = scale * b.data[o * rank + r];
        if (coef === 0) continue;
        const row = o * inFeatures;
        const aRow = r * inFeatures;
        for (let i = 0; i < inFeatures; i++) data[row + i] += coef * a.data[aRow + i];
      }
    }
    merged.set(name, { shape: base.shape, data });
  }
  return merged;
}
