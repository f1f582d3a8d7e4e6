// Next-token distributions shaped like a trained LM's at a real vocabulary size, for the parts
// of the benchmark that need one step's numbers without running a model (the step summary,
// the transport): a noisy floor and a few strong candidates, so the alpha-plausible set holds
// a handful of tokens as it does in sampling, and an amateur that disagrees in part.
//
// Also the SPARSE summary raced both ways on such steps, per stream-step, for 1, 16 and 64
// streams of one scheduler step: core/math's summarizeStep in JavaScript (what the server did
// before) against the server's ONNX Runtime graph (PairSummaryGraph); and FULL float16's
// rounding of both rows the same two ways, and temperature sampling of one row (core/math's
// sampleToken against the server's SamplingGraph). Run it alone with
// `npx tsx bench/distributions.ts [--vocab N] [--rows 1,16,64] [--repeats N] [--threads N]`.
import { pathToFileURL } from "node:url";
import type { LogProbs } from "#core/math/distribution.ts";
import { logSoftmax } from "#core/math/distribution.ts";
import { float32ArrayToFloat16 } from "#core/math/float16.ts";
import { SeededRandom } from "#core/math/random.ts";
import { sampleToken } from "#core/math/sampling.ts";
import { summarizeStep } from "#core/math/sparse-step.ts";
import { SamplingGraph } from "#inference/model/sampling-graph.ts";
import type { PairSummaryRequest } from "#inference/model/pair-summary-graph.ts";
import { PairSummaryGraph, SUMMARY_THREADS, withinSummaryTolerance } from "#inference/model/pair-summary-graph.ts";
import { currentLoad, describeMachine } from "./machine.ts";
import type { Measured } from "./stats.ts";
import { BenchInputError, formatMeasured, formatNumber, formatRatio, measured, median, ratio } from "./stats.ts";
import { renderTable } from "./text-table.ts";

export interface StepDistributions {
  logpExpert: LogProbs;
  logpAmateur: LogProbs;
}

export function syntheticStep(vocabSize: number, seed: number): StepDistributions {
  const rng = new SeededRandom(seed);
  const floor = () => Float32Array.from({ length: vocabSize }, () => rng.normal() * 2);
  const expert = floor();
  const amateur = floor();
  for (let j = 0; j < 4; j++) {
    const id = rng.int(vocabSize);
    expert[id] += 14 + rng.next() * 4;
    amateur[id] += 8 + rng.next() * 8;
  }
  return { logpExpert: logSoftmax(expert), logpAmateur: logSoftmax(amateur) };
}

export interface SummaryRace {
  /** Stream-steps summarized together, as one scheduler step hands them over. */
  rows: number;
  /** core/math summarizeStep, one pair after the other: ms per stream-step. */
  javascriptMs: Measured;
  /** The process's CPU time per stream-step of the JavaScript path (on a busy machine, the fairer figure). */
  javascriptCpuMs: Measured;
  /** PairSummaryGraph, every pair of the step submitted at once: wall ms per stream-step (on the event loop). */
  nativeMs: Measured;
  /** The process's CPU time (every ONNX Runtime thread) per stream-step of the native path. */
  nativeCpuMs: Measured;
  /** javascriptMs over nativeMs. */
  speedup: number | null;
  /** javascriptCpuMs over nativeCpuMs. */
  cpuSpeedup: number | null;
}

/** The same two ways for work on one stream-step alone: FULL float16 (both rows rounded to half precision), sampling the expert's row. */
export interface OneRowRace {
  javascriptMs: Measured;
  nativeMs: Measured;
  speedup: number | null;
}

export interface SummaryRaceOptions {
  vocabSize: number;
  rows: readonly number[];
  repeats: number;
  alpha: number;
  topK: number;
  /** ONNX Runtime intra-op threads (default SUMMARY_THREADS, as the server runs it). */
  threads?: number;
}

/**
 * Times both ways on the same synthetic steps, alternating within each repeat, after one
 * unrecorded warm-up of each; first checks that they agree (ids exactly, sums within
 * SUMMARY_TOLERANCE), so a fast wrong graph cannot post a figure.
 */
export async function raceSummaries(options: SummaryRaceOptions, log: (line: string) => void = () => {}): Promise<{ summaries: SummaryRace[]; aloneColdMs: Measured; float16: OneRowRace; sampling: SamplingRace[] }> {
  const { vocabSize, rows, repeats, alpha, topK, threads = SUMMARY_THREADS } = options;
  if (!Number.isInteger(repeats) || repeats < 1) throw new BenchInputError("repeats", `must be a positive integer, got ${repeats}`);
  if (rows.length === 0 || rows.some((r) => !Number.isInteger(r) || r < 1)) throw new BenchInputError("rows", `must be positive integers, got ${rows.join(",")}`);
  const most = Math.max(...rows);
  const steps = Array.from({ length: most }, (_, i) => ({ ...syntheticStep(vocabSize, 100 + i), alpha, topK }));
  const graph = await PairSummaryGraph.open(vocabSize, { executionProvider: "cpu", threads });
  try {
    for (const step of steps.slice(0, 4)) {
      const native = await graph.summarize(step);
      const exact = summarizeStep(step.logpExpert, step.logpAmateur, step);
      const same = String(native.plausibleIds) === String(exact.plausibleIds) && String(native.expertTop.ids) === String(exact.expertTop.ids) && String(native.amateurTop.ids) === String(exact.amateurTop.ids);
      if (!same || !withinSummaryTolerance(native.kl, exact.kl) || !withinSummaryTolerance(native.expertEntropy, exact.expertEntropy)) {
        throw new Error(`the native summary disagrees with core/math (kl ${native.kl} vs ${exact.kl}); no figure`);
      }
    }
    const timed = async (batch: typeof steps, work: () => unknown) => {
      const cpu = process.cpuUsage();
      const started = performance.now();
      await work();
      const wall = (performance.now() - started) / batch.length;
      const used = process.cpuUsage(cpu);
      return { wall, cpu: (used.user + used.system) / 1000 / batch.length };
    };
    const javascript = (batch: typeof steps) => timed(batch, () => batch.forEach((s) => summarizeStep(s.logpExpert, s.logpAmateur, s)));
    const native = (batch: typeof steps) => timed(batch, () => Promise.all(batch.map((s) => graph.summarize(s))));
    const out: SummaryRace[] = [];
    for (const n of rows) {
      const batch = steps.slice(0, n);
      await javascript(batch.slice(0, 2));
      await native(batch);
      const js = { wall: [] as number[], cpu: [] as number[] };
      const graphTimes = { wall: [] as number[], cpu: [] as number[] };
      for (let r = 0; r < repeats; r++) {
        for (const [times, t] of [[js, await javascript(batch)], [graphTimes, await native(batch)]] as const) {
          times.wall.push(t.wall);
          times.cpu.push(t.cpu);
        }
      }
      const javascriptMs = measured(js.wall, "ms");
      const javascriptCpuMs = measured(js.cpu, "ms");
      const nativeMs = measured(graphTimes.wall, "ms");
      const nativeCpuMs = measured(graphTimes.cpu, "ms");
      const race = { rows: n, javascriptMs, javascriptCpuMs, nativeMs, nativeCpuMs, speedup: ratio(javascriptMs, nativeMs), cpuSpeedup: ratio(javascriptCpuMs, nativeCpuMs) };
      log(`  ${n} rows: ${race.javascriptMs.median.toFixed(2)} ms JavaScript, ${race.nativeMs.median.toFixed(3)} ms native per stream-step`);
      out.push(race);
    }
    const [one] = steps;
    const halfJs = () => timed([one], () => [float32ArrayToFloat16(one.logpExpert), float32ArrayToFloat16(one.logpAmateur)]);
    const halfNative = () => timed([one], () => graph.toFloat16(one.logpExpert, one.logpAmateur));
    await halfJs();
    await halfNative();
    const half = { js: [] as number[], native: [] as number[] };
    for (let r = 0; r < repeats * 10; r++) {
      half.js.push((await halfJs()).wall);
      half.native.push((await halfNative()).wall);
    }
    const float16 = { javascriptMs: measured(half.js, "ms"), nativeMs: measured(half.native, "ms"), speedup: ratio(median(half.js), median(half.native)) };
    const sampling = await raceSampling(steps, repeats * 10, threads);
    return { summaries: out, aloneColdMs: await summaryAloneCold(graph, steps, repeats * 8), float16, sampling };
  } finally {
    await graph.release();
  }
}

/**
 * One stream-step's summary on the graph by itself, as a lone stream meets it after a model
 * step: its rows pushed out of the caches first (64 MiB touched, beyond the last-level cache)
 * and no JavaScript work around it, whose garbage collection would land in the timing (the
 * races above alternate with core/math's summary, which allocates).
 */
async function summaryAloneCold(graph: PairSummaryGraph, steps: readonly PairSummaryRequest[], runs: number): Promise<Measured> {
  const evict = new Float64Array(8 << 20);
  const times: number[] = [];
  for (let r = 0; r < runs; r++) {
    for (let j = 0; j < evict.length; j += 8) evict[j] += 1;
    const started = performance.now();
    await graph.summarize(steps[r % steps.length]);
    times.push(performance.now() - started);
  }
  return measured(times, "ms");
}

/** Sampling at temperature 1 over the whole vocabulary, then over the top-p 0.9 nucleus. */
const SAMPLING_TOP_P = [1, 0.9];

export interface SamplingRace extends OneRowRace {
  topP: number;
}

/** Sampling (T 1, each of SAMPLING_TOP_P) of each step's expert row both ways, after checking that they draw the same tokens and that the graph drew them itself. */
async function raceSampling(steps: readonly { logpExpert: Float32Array }[], repeats: number, threads: number): Promise<SamplingRace[]> {
  let coreMath = 0;
  const graph = await SamplingGraph.open(steps[0].logpExpert.length, { executionProvider: "cpu", threads }, (by) => void (by === "core_math" && coreMath++));
  const u = (i: number) => (i * 0.618034) % 1;
  try {
    const races: SamplingRace[] = [];
    for (const topP of SAMPLING_TOP_P) {
      const options = { temperature: 1, topP };
      coreMath = 0;
      for (const [i, { logpExpert }] of steps.slice(0, 8).entries()) {
        const exact = sampleToken(logpExpert, options, { next: () => u(i) });
        const native = await graph.sample(logpExpert, options, u(i));
        if (native !== exact) throw new Error(`the sampling graph drew token ${native} where core/math drew ${exact}; no figure`);
      }
      if (coreMath > 0) throw new Error(`the sampling graph handed ${coreMath} of 8 draws at top-p ${topP} to core/math; no figure`);
      const times = { js: [] as number[], native: [] as number[] };
      for (let r = 0; r < repeats; r++) {
        const { logpExpert } = steps[r % steps.length];
        let started = performance.now();
        sampleToken(logpExpert, options, { next: () => u(r) });
        times.js.push(performance.now() - started);
        started = performance.now();
        await graph.sample(logpExpert, options, u(r));
        times.native.push(performance.now() - started);
      }
      races.push({ topP, javascriptMs: measured(times.js, "ms"), nativeMs: measured(times.native, "ms"), speedup: ratio(median(times.js), median(times.native)) });
    }
    return races;
  } finally {
    await graph.release();
  }
}

export function renderSummaryRaces({ summaries: races, aloneColdMs, float16, sampling }: { summaries: readonly SummaryRace[]; aloneColdMs: Measured; float16: OneRowRace; sampling: readonly SamplingRace[] }, options: SummaryRaceOptions): string {
  return [
    `SPARSE step summary at vocabulary ${formatNumber(options.vocabSize)} (ms per stream-step, wall and process CPU; alpha ${options.alpha}, top-k ${options.topK}; rows = stream-steps of one scheduler step; graph on ${options.threads ?? SUMMARY_THREADS} ONNX Runtime thread(s))`,
    renderTable(
      ["rows", "JavaScript (before)", "JS CPU", "ONNX Runtime graph (after)", "graph CPU", "speedup", "CPU speedup"],
      races.map((r) => [String(r.rows), formatMeasured(r.javascriptMs), formatMeasured(r.javascriptCpuMs), formatMeasured(r.nativeMs), formatMeasured(r.nativeCpuMs), formatRatio(r.speedup), formatRatio(r.cpuSpeedup)]),
    ),
    `one stream-step alone on the graph, its rows out of the caches and no JavaScript work around it: ${formatMeasured(aloneColdMs)} ms`,
    "FULL float16, both rows of one stream-step rounded to half precision (ms)",
    renderTable(["rows", "JavaScript float32ArrayToFloat16 (before)", "ONNX Runtime Cast (after)", "speedup"], [["1", formatMeasured(float16.javascriptMs), formatMeasured(float16.nativeMs), formatRatio(float16.speedup)]]),
    "Sampling one row at temperature 1 (ms; the same token both ways)",
    renderTable(["top-p", "JavaScript sampleToken (before)", "ONNX Runtime graph (after)", "speedup"], sampling.map((r) => [String(r.topP), formatMeasured(r.javascriptMs), formatMeasured(r.nativeMs), formatRatio(r.speedup)])),
  ].join("\n");
}

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

async function main(args: string[]): Promise<void> {
  const options: SummaryRaceOptions = {
    vocabSize: Number(flag(args, "--vocab") ?? 151_936),
    rows: (flag(args, "--rows") ?? "1,16,64").split(",").map(Number),
    repeats: Number(flag(args, "--repeats") ?? 5),
    alpha: 0.2,
    topK: 4,
    threads: flag(args, "--threads") === undefined ? undefined : Number(flag(args, "--threads")),
  };
  if (!Number.isInteger(options.vocabSize) || options.vocabSize < 1) throw new BenchInputError("--vocab", `must be a positive integer, got ${flag(args, "--vocab")}`);
  const machine = describeMachine();
  const races = await raceSummaries(options);
  console.log(`machine: ${machine.cpuModel}, ${machine.cores} cores; load ${formatNumber(machine.loadAverageAtStart)} at start, ${formatNumber(currentLoad())} at end`);
  console.log(renderSummaryRaces(races, options));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
