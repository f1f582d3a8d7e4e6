// LoRA adapters for the tiny test models: settings that adapt every projection, and a fresh
// adapter whose B is filled in, so the update (and A's gradient) is not zero as it is for a
// freshly initialised PEFT adapter.
import type { ModelConfig } from "#core/model/config.ts";
import type { LoraAdapter, LoraSettings } from "#core/model/lora.ts";
import { SeededRandom } from "#core/math/random.ts";
import { LoraLayers } from "#trainer/model/lora.ts";

export const ALL_MODULES: LoraSettings = {
  rank: 4,
  alpha: 12,
  dropout: 0.05,
  targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
};

export function adapterWithNonZeroB(config: ModelConfig, settings: LoraSettings, seed: number): LoraAdapter {
  const layers = LoraLayers.create(config, settings, seed);
  const adapter = layers.toAdapter();
  layers.dispose();
  const random = new SeededRandom(seed + 1);
  for (const { b } of adapter.pairs.values()) for (let i = 0; i < b.data.length; i++) b.data[i] = 0.3 * random.normal();
  return adapter;
}

/** The largest absolute difference between two adapters' A and B values, pair by pair. */
export function maxAdapterDiff(a: LoraAdapter, b: LoraAdapter): number {
  let worst = 0;
  for (const [name, pair] of a.pairs) {
    const other = b.pairs.get(name)!;
    pair.a.data.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - other.a.data[i]))));
    pair.b.data.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - other.b.data[i]))));
  }
  return worst;
}
