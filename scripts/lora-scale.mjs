#!/usr/bin/env node
// LoRA gradient parity and training speed at a real shape (issue 13 items 2 and 5): an
// engine's gradients (ONNX Runtime by default, or --engine tfjs) against float64 PyTorch, and
// its training step beside PyTorch float32's, on one micro-batch. Needs Debian's python3-torch and a model directory (default:
// the benchmark's Qwen2.5-0.5B-shaped expert in .cache/bench, made by `npm run bench`).
//   node --expose-gc scripts/lora-scale.mjs [--expert DIR] [--engine onnxruntime|tfjs] [--rows 4] [--seq 128] [--labels 2] [--steps 3] [--python /usr/bin/python3]
import { parseArgs } from "node:util";
import { register } from "tsx/esm/api";

register();
const { runLoraScale, describeLoraScale, defaultExpertDir } = await import("#bench/lora-scale.ts");
const { values } = parseArgs({
  options: {
    expert: { type: "string" },
    engine: { type: "string", default: "onnxruntime" },
    rows: { type: "string", default: "4" },
    seq: { type: "string", default: "128" },
    labels: { type: "string", default: "2" },
    steps: { type: "string", default: "3" },
    python: { type: "string", default: "/usr/bin/python3" },
    seed: { type: "string", default: "1" },
  },
});
const count = (name) => {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${values[name]}`);
  return n;
};
if (!["onnxruntime", "tfjs"].includes(values.engine)) throw new Error(`--engine must be onnxruntime or tfjs, got ${values.engine}`);
const result = await runLoraScale({
  expertDir: values.expert ?? defaultExpertDir(),
  engine: values.engine,
  rows: count("rows"),
  seq: count("seq"),
  labelsPerRow: count("labels"),
  steps: count("steps"),
  python: values.python,
  seed: count("seed"),
  log: (line) => console.log(line),
});
for (const line of describeLoraScale(result)) console.log(line);
console.log(JSON.stringify(result));
process.exitCode = result.gradient.pass ? 0 : 1;
