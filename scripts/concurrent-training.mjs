#!/usr/bin/env node
// What a second run at once costs the trainer in memory: the trainer loads the expert's
// weights once and every run's ONNX Runtime LoRA engine reads them in place as graph inputs, so
// a run adds its own sessions, activations (bounded by the token budget) and adapter, not a
// second copy of the expert. Loads the expert, trains one LoRA engine alone, then two at once
// (as two runs do), and prints the process's peak resident set after each phase.
//   node scripts/concurrent-training.mjs [--expert DIR] [--rows 2] [--seq 128] [--steps 2]
// Default expert: the benchmark's Qwen2.5-0.5B-shaped one in .cache/bench (`npm run bench` makes it).
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { register } from "tsx/esm/api";

register();
const { loadModelDir } = await import("#core/formats/model-dir.ts");
const { SeededRandom } = await import("#core/math/random.ts");
const { DEFAULT_LORA } = await import("#core/model/lora.ts");
const { selectBackend } = await import("#trainer/model/backend.ts");
const { LoraLayers } = await import("#trainer/model/lora.ts");
const { activationBytesPerToken, OnnxLoraExpert } = await import("#trainer/model/onnx-lora-expert.ts");
const { processMemory } = await import("#core/metrics/process-memory.ts");

const { values } = parseArgs({ options: { expert: { type: "string" }, rows: { type: "string", default: "2" }, seq: { type: "string", default: "128" }, steps: { type: "string", default: "2" } } });
const count = (name) => {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${values[name]}`);
  return n;
};
const rows = count("rows");
const seq = count("seq");
const steps = count("steps");
const GiB = (bytes) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;
const peak = () => processMemory(process.pid).peakRssBytes;

await selectBackend();
const expertDir = values.expert ?? fileURLToPath(new URL("../.cache/bench/qwen2.5-0.5b-shape/expert", import.meta.url));
const { config, weights } = loadModelDir(expertDir);
const weightBytes = [...weights.values()].reduce((n, t) => n + 4 * t.data.length, 0);
console.log(`expert ${expertDir}: ${GiB(weightBytes)} of float32 weights, loaded once; peak RSS so far ${GiB(peak())}`);

/** One run's training side: its own adapter, engine sessions and a micro-batch of random rows. */
async function runSide(seed) {
  const settings = { ...DEFAULT_LORA, targetModules: [...DEFAULT_LORA.targetModules] };
  const lora = LoraLayers.create(config, settings, seed);
  const engine = await OnnxLoraExpert.create(config, weights, settings, { tokenBudget: rows * seq });
  const random = new SeededRandom(seed);
  const batch = {
    rows: Array.from({ length: rows }, () => Array.from({ length: seq }, () => random.int(config.vocabSize))),
    positions: Array.from({ length: rows }, (_, b) => [b, seq - 1]),
    labels: Array.from({ length: rows }, () => ({ ids: [random.int(config.vocabSize)], weights: [1] })),
  };
  return {
    step: () => engine.lossAndGradients({ ...batch, normaliser: rows, dropoutPass: lora.beginPass() }, lora),
    dispose: async () => {
      await engine.dispose();
      lora.dispose();
    },
  };
}

const first = await runSide(1);
for (let i = 0; i < steps; i++) await first.step();
const one = peak();
console.log(`one run training (${rows} rows x ${seq} tokens a pass): peak RSS ${GiB(one)}`);
const second = await runSide(2);
for (let i = 0; i < steps; i++) await Promise.all([first.step(), second.step()]);
const two = peak();
console.log(`two runs training at once: peak RSS ${GiB(two)}; the second run added ${GiB(two - one)} (the engine plans ${GiB(rows * seq * activationBytesPerToken(config, seq))} of activations per run at this budget)`);
await first.dispose();
await second.dispose();
