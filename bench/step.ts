// Section "step": the JavaScript work the service does per stream and step at a real
// vocabulary, on the serving thread where no model runs meanwhile: the log-softmax of each
// model's logits, and the SPARSE summary of the pair (KL, entropy, plausible set, top-k),
// in its first multi-pass form and in the single pass that replaced it. At 64 streams of a
// 151,936-token vocabulary this work rivals the 0.5B-shaped pair's own forward pass.
import { logSoftmax } from "#core/math/distribution.ts";
import { SeededRandom } from "#core/math/random.ts";
import { summarizeStep, summarizeStepInPasses } from "#core/math/sparse-step.ts";
import { syntheticStep } from "./distributions.ts";
import type { BenchSettings } from "./settings.ts";
import type { Measured } from "./stats.ts";
import { measured, ratio } from "./stats.ts";

export interface StepResult {
  how: string;
  vocabSize: number;
  alpha: number;
  topK: number;
  logSoftmaxMs: Measured;
  summaryInPassesMs: Measured;
  summarySinglePassMs: Measured;
  /** inPasses over singlePass. */
  speedup: number | null;
}

export const STEP_HOW = "milliseconds per call on synthetic LM-like distributions, alternating the two summaries within each repeat";

function msPerCall(calls: number, work: () => unknown): number {
  const started = performance.now();
  for (let i = 0; i < calls; i++) work();
  return (performance.now() - started) / calls;
}

export async function runStep(settings: BenchSettings, log: (line: string) => void): Promise<StepResult> {
  const { vocabSize, calls, repeats } = settings.step;
  const { alpha, topK } = settings.sampling;
  const { logpExpert, logpAmateur } = syntheticStep(vocabSize, 5);
  const rng = new SeededRandom(6);
  const logits = Float32Array.from({ length: vocabSize }, () => rng.normal() * 3);
  const options = { alpha, topK };
  const inPasses = () => summarizeStepInPasses(logpExpert, logpAmateur, options);
  const singlePass = () => summarizeStep(logpExpert, logpAmateur, options);
  // Warm-up: let the JIT compile every loop before anything is timed.
  msPerCall(3, inPasses);
  msPerCall(3, singlePass);
  msPerCall(3, () => logSoftmax(logits));
  const before: number[] = [];
  const after: number[] = [];
  const softmax: number[] = [];
  for (let r = 0; r < repeats; r++) {
    before.push(msPerCall(calls, inPasses));
    after.push(msPerCall(calls, singlePass));
    softmax.push(msPerCall(calls, () => logSoftmax(logits)));
  }
  const summaryInPassesMs = measured(before, "ms");
  const summarySinglePassMs = measured(after, "ms");
  const result = { how: STEP_HOW, vocabSize, alpha, topK, logSoftmaxMs: measured(softmax, "ms"), summaryInPassesMs, summarySinglePassMs, speedup: ratio(summaryInPassesMs, summarySinglePassMs) };
  log(`  summary at V=${vocabSize}: ${summaryInPassesMs.median.toFixed(2)} ms in passes, ${summarySinglePassMs.median.toFixed(2)} ms in one pass`);
  return result;
}
