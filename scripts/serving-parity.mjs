#!/usr/bin/env node
// Serving parity at a real shape (issue 13 item 2): the expert served with a trained PEFT
// adapter against the trainer's ONNX Runtime engine with the same adapter, on random prompts;
// prints the largest log-probability difference and PASS/FAIL against 1e-3 (exit 1 on FAIL).
// Default expert: the benchmark's Qwen2.5-0.5B-shaped one in .cache/bench (made by `npm run bench`).
//   node scripts/serving-parity.mjs --adapter DIR [--expert DIR] [--prompts 3] [--len 32] [--positions 4] [--top 4] [--random 4] [--seed 1] [--threads N]
import { parseArgs } from "node:util";
import { register } from "tsx/esm/api";

register();
const { runServingParity, describeServingParity } = await import("#bench/serving-parity.ts");
const { defaultExpertDir } = await import("#bench/lora-scale.ts");
const { processMemory } = await import("#core/metrics/process-memory.ts");
const { values } = parseArgs({
  options: {
    expert: { type: "string" },
    adapter: { type: "string" },
    prompts: { type: "string", default: "3" },
    len: { type: "string", default: "32" },
    positions: { type: "string", default: "4" },
    top: { type: "string", default: "4" },
    random: { type: "string", default: "4" },
    seed: { type: "string", default: "1" },
    threads: { type: "string" },
  },
});
const count = (name, min = 1) => {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${values[name]}`);
  return n;
};
if (!values.adapter) throw new Error("--adapter is required: a PEFT adapter directory (adapter_config.json + adapter_model.safetensors)");
const started = performance.now();
const result = await runServingParity({
  expertDir: values.expert ?? defaultExpertDir(),
  adapterDir: values.adapter,
  prompts: count("prompts"),
  len: count("len"),
  positions: count("positions"),
  topTokens: count("top"),
  randomTokens: count("random", 0),
  seed: count("seed", 0),
  ...(values.threads === undefined ? {} : { threads: count("threads") }),
  log: (line) => console.log(line),
});
for (const line of describeServingParity(result)) console.log(line);
console.log(`wall ${((performance.now() - started) / 1000).toFixed(1)} s, peak RSS ${(processMemory(process.pid).peakRssBytes / 2 ** 30).toFixed(2)} GiB`);
process.exitCode = result.pass ? 0 : 1;
