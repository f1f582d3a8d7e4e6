// `lightreasoner bench`: runs the chosen sections in order, each figure measured now, and
// writes bench.json (rewritten after every section, so an interrupted run keeps what it
// finished) and the table. Derived figures, such as the fraction of the machine's ceiling a
// pair reached, are computed here from sections of the same run, never carried over.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import type { AdapterMixResult } from "./adapters.ts";
import { runAdapters } from "./adapters.ts";
import type { AmateurResult } from "./amateur.ts";
import { runAmateur } from "./amateur.ts";
import type { DecodeResult } from "./decode.ts";
import { runDecode } from "./decode.ts";
import type { LimitsResult, MatmulLibrary, Roofline } from "./limits.ts";
import { bestRateAtRows, bestRateOn, roofline, runLimits } from "./limits.ts";
import type { MachineInfo } from "./machine.ts";
import { cpuTimes, currentLoad, describeMachine, stolenShare } from "./machine.ts";
import type { MemoryResult } from "./memory.ts";
import { runMemory } from "./memory.ts";
import type { SamplingResult } from "./sampling.ts";
import { runSampling } from "./sampling.ts";
import type { Section } from "./settings.ts";
import { SECTIONS, benchSettings } from "./settings.ts";
import type { StepResult } from "./step.ts";
import { runStep } from "./step.ts";
import { BenchInputError } from "./stats.ts";
import type { ScaleResult } from "./scale.ts";
import { runScale } from "./scale.ts";
import type { TrainingResult } from "./training.ts";
import { runTraining } from "./training.ts";
import type { TransportResult } from "./transport.ts";
import { runTransport } from "./transport.ts";

export const REPORT_FORMAT = "lightreasoner-bench-v1";

export interface CeilingFraction {
  pair: string;
  ceilingTokensPerSecond: number;
  /** The best median tokens/s of the service over the stream counts, and where. */
  bestServiceTokensPerSecond: number;
  bestServiceStreams: number;
  fraction: number;
  /** The same for tokens after the prefill (steady decoding). */
  bestDecodeTokensPerSecond: number;
  decodeFraction: number;
}

export interface BenchReport {
  format: typeof REPORT_FORMAT;
  quick: boolean;
  sections: Section[];
  startedAt: string;
  wallSeconds: number;
  sectionSeconds: Partial<Record<Section, number>>;
  machine: MachineInfo;
  step?: StepResult;
  limits?: LimitsResult;
  amateur?: AmateurResult;
  decode?: DecodeResult;
  adapters?: AdapterMixResult;
  transport?: TransportResult;
  sampling?: SamplingResult;
  training?: TrainingResult;
  scale?: ScaleResult;
  memory?: MemoryResult;
  derived: { ceilingFractions: CeilingFraction[]; endToEndCeiling: EndToEndCeiling[]; amateurHeadBounds: AmateurHeadBound[]; decodeRooflines: DecodeRoofline[] };
}

/** The amateur section's end-to-end lockstep rate against the same run's ceiling. */
export interface EndToEndCeiling {
  pair: string;
  streams: number;
  newTokens: number;
  ceilingGflops: number;
  ceilingTokensPerSecond: number;
  tokensPerSecond: number;
  fraction: number;
  decodeTokensPerSecond: number;
  decodeFraction: number;
  /** The best rate measured on a limits shape with as many rows as streams, and tokens/s at it (null: no such shape). */
  batchRowsGflops: number | null;
  batchRowsTokensPerSecond: number | null;
  batchRowsFraction: number | null;
}

export interface BenchOptions {
  quick: boolean;
  /** Where bench.json goes. */
  out: string;
  /** Sections to run (default: all). */
  only?: readonly string[];
  cacheDir?: string;
  log?: (line: string) => void;
}

/** Validates a --only list; an unknown name is refused with the valid ones. */
export function parseSections(only: readonly string[] | undefined): Section[] {
  if (!only || only.length === 0) return [...SECTIONS];
  const names = only.flatMap((s) => s.split(",")).map((s) => s.trim()).filter((s) => s !== "");
  for (const name of names) {
    if (!(SECTIONS as readonly string[]).includes(name)) throw new BenchInputError("--only", `unknown section ${JSON.stringify(name)}; choose from ${SECTIONS.join(", ")}`);
  }
  if (names.length === 0) throw new BenchInputError("--only", `names no section; choose from ${SECTIONS.join(", ")}`);
  return SECTIONS.filter((s) => names.includes(s));
}

/** Fractions of the ceiling for every pair both the limits and the sampling sections measured. */
export function ceilingFractions(limits: LimitsResult | undefined, sampling: SamplingResult | undefined): CeilingFraction[] {
  if (!limits || !sampling) return [];
  return sampling.pairs.flatMap((p) => {
    const ceiling = limits.pairs.find((c) => c.pair === p.workload.name);
    if (!ceiling || !p.service || p.service.cells.length === 0) return [];
    const best = p.service.cells.reduce((a, b) => (b.tokensPerSecond.median > a.tokensPerSecond.median ? b : a));
    const bestDecode = Math.max(...p.service.cells.map((c) => c.decodeTokensPerSecond.median));
    return [
      {
        pair: p.workload.name,
        ceilingTokensPerSecond: ceiling.ceilingTokensPerSecond,
        bestServiceTokensPerSecond: best.tokensPerSecond.median,
        bestServiceStreams: best.streams,
        fraction: best.tokensPerSecond.median / ceiling.ceilingTokensPerSecond,
        bestDecodeTokensPerSecond: bestDecode,
        decodeFraction: bestDecode / ceiling.ceilingTokensPerSecond,
      },
    ];
  });
}

/** Fractions of the ceiling for the amateur section's end-to-end runs (needs the limits section). */
export function endToEndCeilings(limits: LimitsResult | undefined, amateur: AmateurResult | undefined): EndToEndCeiling[] {
  if (!limits || !amateur) return [];
  return amateur.pairs.flatMap((p) => {
    const e = p.endToEnd;
    if (!e) return [];
    const ceilingTokensPerSecond = (limits.peakGflops * 1e9) / e.flopsPerToken;
    const batchRowsGflops = bestRateAtRows(limits, e.streams);
    const batchRowsTokensPerSecond = batchRowsGflops === null ? null : (batchRowsGflops * 1e9) / e.flopsPerToken;
    return [
      {
        pair: p.pair.name,
        streams: e.streams,
        newTokens: e.newTokens,
        ceilingGflops: limits.peakGflops,
        ceilingTokensPerSecond,
        tokensPerSecond: e.tokensPerSecond.median,
        fraction: e.tokensPerSecond.median / ceilingTokensPerSecond,
        decodeTokensPerSecond: e.decodeTokensPerSecond.median,
        decodeFraction: e.decodeTokensPerSecond.median / ceilingTokensPerSecond,
        batchRowsGflops,
        batchRowsTokensPerSecond,
        batchRowsFraction: batchRowsTokensPerSecond === null ? null : e.tokensPerSecond.median / batchRowsTokensPerSecond,
      },
    ];
  });
}

/**
 * What the amateur's LM head alone costs lockstep: every step multiplies the batch's rows by
 * the whole [hidden, vocab] head, the product the limits section times at the amateur section's
 * rows. At the best rate any library reached on it, the head's time over the new tokens bounds
 * lockstep from below, and so the ratio to the reference's way from above.
 */
export interface AmateurHeadBound {
  pair: string;
  rows: number;
  hidden: number;
  vocab: number;
  gflops: number;
  library: MatmulLibrary;
  headSeconds: number;
  lockstepSeconds: number;
  /** The reference's way (head at every position) over headSeconds: the most lockstep could gain here. */
  maxRatio: number;
  /** The head's float32 weights, which a step reads once. */
  headBytes: number;
  /** headBytes each step at the run's memory-read peak: how far below the memory's limit the best library runs the head. */
  readPeakSeconds: number;
}

export function amateurHeadBounds(limits: LimitsResult | undefined, amateur: AmateurResult | undefined): AmateurHeadBound[] {
  if (!limits || !amateur) return [];
  return amateur.pairs.flatMap((p) => {
    const vocab = p.pair.vocabSize;
    const hidden = p.multiplyAdds.head / vocab;
    const rows = p.cost.streams;
    const best = bestRateOn(limits, rows, hidden, vocab);
    if (!best) return [];
    const headSeconds = (p.newTokens * 2 * rows * p.multiplyAdds.head) / (best.gflops * 1e9);
    const headBytes = 4 * p.multiplyAdds.head;
    const readPeakSeconds = (p.newTokens * headBytes) / (limits.peakReadGBs * 1e9);
    return [{ pair: p.pair.name, rows, hidden, vocab, ...best, headSeconds, lockstepSeconds: p.cost.lockstepSeconds.median, maxRatio: p.cost.reencodeEveryPositionSeconds.median / headSeconds, headBytes, readPeakSeconds }];
  });
}

/** A decode batch's measured rates against the roofline of the same run: its step's bytes at the read peak, its FLOPs at the MatMul peak. */
export interface DecodeRoofline {
  batch: number;
  tokensPerSecond: number;
  boundBy: Roofline["boundBy"];
  onnxruntimeFraction: number;
  torchFraction: number | null;
}

export function decodeRooflines(limits: LimitsResult | undefined, decode: DecodeResult | undefined): DecodeRoofline[] {
  if (!limits || !decode) return [];
  return decode.rows.map((row) => {
    const bound = roofline(row.step, limits.peakGflops, limits.peakReadGBs);
    const tokensPerSecond = row.batch / bound.seconds;
    return {
      batch: row.batch,
      tokensPerSecond,
      boundBy: bound.boundBy,
      onnxruntimeFraction: row.onnxruntime.median / tokensPerSecond,
      torchFraction: row.torch ? row.torch.median / tokensPerSecond : null,
    };
  });
}

export async function runBench(options: BenchOptions): Promise<BenchReport> {
  const sections = parseSections(options.only);
  const log = options.log ?? (() => {});
  const settings = benchSettings({ quick: options.quick, cacheDir: options.cacheDir && resolve(options.cacheDir) });
  const out = resolve(options.out);
  const started = performance.now();
  const report: BenchReport = {
    format: REPORT_FORMAT,
    quick: options.quick,
    sections,
    startedAt: new Date().toISOString(),
    wallSeconds: 0,
    sectionSeconds: {},
    machine: describeMachine(),
    derived: { ceilingFractions: [], endToEndCeiling: [], amateurHeadBounds: [], decodeRooflines: [] },
  };
  const save = () => {
    report.wallSeconds = (performance.now() - started) / 1000;
    report.machine.loadAverageAtEnd = currentLoad();
    report.machine.stolenShare = stolenShare(report.machine.cpuTimesAtStart, cpuTimes());
    report.derived.ceilingFractions = ceilingFractions(report.limits, report.sampling);
    report.derived.endToEndCeiling = endToEndCeilings(report.limits, report.amateur);
    report.derived.amateurHeadBounds = amateurHeadBounds(report.limits, report.amateur);
    report.derived.decodeRooflines = decodeRooflines(report.limits, report.decode);
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
  };
  for (const section of sections) {
    const sectionStarted = performance.now();
    log(`${section}...`);
    switch (section) {
      case "step":
        report.step = await runStep(settings, log);
        break;
      case "limits":
        report.limits = await runLimits(settings, log, report.machine.cpuModel);
        break;
      case "amateur":
        report.amateur = await runAmateur(settings, log);
        break;
      case "decode":
        report.decode = await runDecode(settings, log);
        break;
      case "adapters":
        report.adapters = await runAdapters(settings, log);
        break;
      case "transport":
        report.transport = await runTransport(settings, log);
        break;
      case "sampling":
        report.sampling = await runSampling(settings, log);
        break;
      case "training":
        report.training = await runTraining(settings, log);
        break;
      case "scale":
        report.scale = await runScale(settings, log);
        break;
      case "memory":
        report.memory = await runMemory(settings, log, report.training);
        break;
    }
    report.sectionSeconds[section] = (performance.now() - sectionStarted) / 1000;
    log(`${section}: ${report.sectionSeconds[section]!.toFixed(1)} s`);
    save();
  }
  save();
  return report;
}
