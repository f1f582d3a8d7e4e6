// The model runner alone, in this process: time to open a served model, a 64-token prefill
// and the decode step at a few batch sizes (fastest and median of 10 steps), and what one
// JavaScript log-softmax over a vocabulary row costs (the per-sequence work the graph's
// LogSoftmax took over). Written against openServedModel and CausalLmSession.step only, so
// the same file runs on an older checkout for a before/after pair:
//   npx tsx bench/decode-step.ts <modelDir> [--threads 1] [--batches 1,8]
import { readFileSync } from "node:fs";
import { logSoftmax } from "#core/math/distribution.ts";
import { openServedModel } from "#inference/engine/served-model.ts";
import { option } from "./script-option.ts";

const MIB = 2 ** 20;

function memory(): { rssMiB: number; anonMiB: number; fileMiB: number } {
  const status = readFileSync("/proc/self/status", "utf8");
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status)?.[1] ?? NaN) * 1024;
  return { rssMiB: Math.round(kib("VmRSS") / MIB), anonMiB: Math.round(kib("RssAnon") / MIB), fileMiB: Math.round(kib("RssFile") / MIB) };
}

const args = process.argv.slice(2);
const dir = args[0];
if (!dir || dir.startsWith("--")) throw new Error("usage: decode-step.ts <modelDir> [--threads 1] [--batches 1,8]");
const threads = Number(option(args, "--threads", "1"));
const batches = option(args, "--batches", "1,8").split(",").map(Number);

const opening = performance.now();
const model = await openServedModel("expert", dir, { executionProvider: "cpu", threads });
console.log(JSON.stringify({ dir, threads, openSeconds: Number(((performance.now() - opening) / 1000).toFixed(2)), ...memory() }));
const session = model.session;
const vocab = model.vocabSize;
const prompt = (seed: number) => Array.from({ length: 64 }, (_, i) => (i * 7919 + seed * 104729) % Math.min(vocab, 100_000));
for (const batch of batches) {
  const caches = Array.from({ length: batch }, () => session.newCache());
  let started = performance.now();
  await session.step(caches.map((cache, b) => ({ cache, tokens: prompt(b) })));
  const prefillMs = performance.now() - started;
  const steps: number[] = [];
  for (let k = 0; k < 10; k++) {
    started = performance.now();
    await session.step(caches.map((cache, b) => ({ cache, tokens: [(k * 31 + b) % vocab] })));
    steps.push(performance.now() - started);
  }
  steps.sort((a, b) => a - b);
  console.log(JSON.stringify({ batch, prefill64Ms: Math.round(prefillMs), decodeFastestMs: Number(steps[0].toFixed(1)), decodeMedianMs: Number(steps[5].toFixed(1)), ...memory() }));
}
const row = Float32Array.from({ length: vocab }, (_, i) => Math.sin(i) * 10);
const times: number[] = [];
for (let k = 0; k < 50; k++) {
  const started = performance.now();
  logSoftmax(row);
  times.push(performance.now() - started);
}
times.sort((a, b) => a - b);
console.log(JSON.stringify({ jsLogSoftmaxPerRowMs: { fastest: Number(times[0].toFixed(3)), median: Number(times[25].toFixed(3)) }, vocab }));
await session.release();
