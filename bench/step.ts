// Section "step": the distribution work the service does per stream and step at a real
// vocabulary, on the serving thread where no model runs meanwhile: the log-softmax of each
// model's logits in JavaScript (what the graphs now do inside), the SPARSE summary of the
// pair (KL, entropy, plausible set, top-k) in JavaScript, multi-pass and single-pass, and
// the same summary on the server's ONNX Runtime graph at 1, 16 and 64 stream-steps of one
// scheduler step. At 64 streams of a 151,936-token vocabulary the JavaScript summary alone
// rivalled the 0.5B-shaped pair's own forward pass.
import { logSoftmax } from "#core/math/distribution.ts";
import { SeededRandom } from "#core/math/random.ts";
import { summarizeStep, summarizeStepInPasses } from "#core/math/sparse-step.ts";
import type { OneRowRace, SamplingRace, SummaryRace } from "./distributions.ts";
import { raceSummaries, syntheticStep } from "./distributions.ts";
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
  /** The single-pass JavaScript summary against the server's ONNX Runtime graph, per stream-step. */
  native: SummaryRace[];
  /** One stream-step's summary on the graph alone, caches cold, no JavaScript work around it. */
  aloneColdMs: Measured;
  /** FULL float16 rounding of both rows, JavaScript against the graph's Cast. */
  float16: OneRowRace;
  /** Sampling one row at temperature 1, whole vocabulary and top-p 0.9, core/math's sampleToken against the graph. */
  sampling: SamplingRace[];
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
  log(`  summary at V=${vocabSize}: ${summaryInPassesMs.median.toFixed(2)} ms in passes, ${summarySinglePassMs.median.toFixed(2)} ms in one pass`);
  const { summaries: native, aloneColdMs, float16, sampling } = await raceSummaries({ vocabSize, rows: [1, 16, 64], repeats, alpha, topK }, log);
  return { how: STEP_HOW, vocabSize, alpha, topK, logSoftmaxMs: measured(softmax, "ms"), summaryInPassesMs, summarySinglePassMs, speedup: ratio(summaryInPassesMs, summarySinglePassMs), native, aloneColdMs, float16, sampling };
}
