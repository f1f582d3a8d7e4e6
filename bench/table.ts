// The benchmark report as the plain-text tables printed on stdout: every figure is a median
// over repeats with its range in parentheses, every comparison a ratio of medians from the
// same run. Pure functions of the report, so the same bench.json always prints the same.
import type { BenchReport } from "./run-bench.ts";
import { formatBytes, formatMeasured, formatNumber, formatPercent, formatRatio } from "./stats.ts";
import { renderTable } from "./text-table.ts";

const mib = (bytes: number) => formatNumber(bytes / 2 ** 20);
const params = (n: number) => (n >= 1e6 ? `${formatNumber(n / 1e6)}M` : formatNumber(n));

function machineLines(r: BenchReport): string[] {
  const m = r.machine;
  const load = `load ${formatNumber(m.loadAverageAtStart)} at start, ${formatNumber(m.loadAverageAtEnd)} at end`;
  const sections = r.sections.map((s) => `${s} ${formatNumber(r.sectionSeconds[s])} s`).join(", ");
  return [
    `lightreasoner bench${r.quick ? " --quick" : ""}: ${formatNumber(r.wallSeconds)} s (${sections})`,
    `machine: ${m.cpuModel}, ${m.cores} cores [${m.vectorFeatures.join(" ")}], ${m.memoryGiB} GiB, ${m.platform}, node ${m.node}, onnxruntime-node ${m.onnxruntimeNode}, tfjs ${m.tfjs}; ${load}`,
    "figures: median (min-max) over repeats; ratios are of medians measured in this run",
  ];
}

function stepLines(r: BenchReport): string[] {
  const s = r.step;
  if (!s) return [];
  return [
    `Per-step JavaScript work at vocabulary ${formatNumber(s.vocabSize)} (ms per stream and step; alpha ${s.alpha}, top-k ${s.topK})`,
    renderTable(
      ["work", "ms", "vs. multi-pass"],
      [
        ["log-softmax of one model's logits", formatMeasured(s.logSoftmaxMs), ""],
        ["SPARSE summary, multi-pass (before)", formatMeasured(s.summaryInPassesMs), ""],
        ["SPARSE summary, one pass (after)", formatMeasured(s.summarySinglePassMs), `${formatRatio(s.speedup)} faster`],
      ],
    ),
  ];
}

function limitsLines(r: BenchReport): string[] {
  const l = r.limits;
  if (!l) return [];
  const fractions = r.derived.ceilingFractions;
  const rows = l.pairs.map((p) => {
    const f = fractions.find((x) => x.pair === p.pair);
    return [
      p.pair,
      `${formatNumber(p.flopsPerToken / 1e9)} G`,
      formatNumber(p.ceilingTokensPerSecond),
      f ? `${formatNumber(f.bestServiceTokensPerSecond)} (x${f.bestServiceStreams})` : "-",
      f ? formatPercent(f.fraction) : "-",
      f ? formatNumber(f.bestDecodeTokensPerSecond) : "-",
      f ? formatPercent(f.decodeFraction) : "-",
    ];
  });
  return [
    "Limit: ONNX Runtime float32 MatMul on this machine",
    renderTable(
      ["shape", "GFLOP/s"],
      l.matmul.map((m) => [`[${m.m}x${m.k}] x [${m.k}x${m.n}]`, formatMeasured(m.gflops)]),
    ),
    "",
    `Ceiling = ${formatNumber(l.peakGflops)} GFLOP/s / (expert + amateur FLOPs per token); reached by the service (sampling section)`,
    renderTable(["pair", "FLOPs/token", "ceiling tok/s", "best tok/s (streams)", "of ceiling", "best decode tok/s", "of ceiling"], rows),
  ];
}

function transportLines(r: BenchReport): string[] {
  const t = r.transport;
  if (!t) return [];
  return [
    `Transport on loopback, vocabulary ${formatNumber(t.vocabSize)} (steps per second; one step = both models' distributions)`,
    renderTable(
      ["encoding", "bytes/step", "gRPC steps/s", "gRPC, 8 MiB window", "raw TCP steps/s", "gRPC/TCP", "gRPC MiB/s", "encode ms/step"],
      t.rows.map((row) => [
        row.encoding,
        formatBytes(row.bytesPerStep),
        formatMeasured(row.grpcStepsPerSecond),
        formatMeasured(row.grpcWideWindowStepsPerSecond),
        formatMeasured(row.tcpStepsPerSecond),
        formatPercent(row.grpcOverTcp),
        formatNumber((row.grpcStepsPerSecond.median * row.bytesPerStep) / 2 ** 20),
        formatMeasured(row.encodeMsPerStep),
      ]),
    ),
  ];
}

function samplingLines(r: BenchReport): string[] {
  const s = r.sampling;
  if (!s) return [];
  const out = ["Lockstep sampling (tokens/s: expert writes, amateur scores, SPARSE summary every step)", `how: ${s.how}`];
  for (const p of s.pairs) {
    const w = p.workload;
    out.push(
      "",
      `${w.name}: ${p.pair.description}; ${params(p.pair.expertParameters)} + ${params(p.pair.amateurParameters)} parameters, vocabulary ${formatNumber(p.pair.vocabSize)}`,
      `  prompts: ${w.prompts} (${w.promptTokens.min}-${w.promptTokens.max} tokens), at most ${w.newTokens} new tokens each, ${w.repeats} repeats` +
        (p.pair.reusedCache ? "" : `; models generated in ${formatNumber(p.pair.preparedSeconds)} s`),
    );
    const rows = p.engine.lockstep.map((cell) => {
      const served = p.service?.cells.find((c) => c.streams === cell.streams);
      const naive = p.engine.reencode.find((c) => c.streams === cell.streams);
      return [
        String(cell.streams),
        served ? formatMeasured(served.tokensPerSecond) : "-",
        served ? formatMeasured(served.decodeTokensPerSecond) : "-",
        formatMeasured(cell.tokensPerSecond),
        naive ? formatMeasured(naive.reencode.tokensPerSecond) : "-",
        naive ? formatRatio(naive.speedup) : "-",
        served ? formatMeasured(served.firstTokenSeconds) : "-",
        served ? formatNumber(served.meanExpertBatch) : "-",
      ];
    });
    out.push(renderTable(["streams", "service tok/s", "service decode tok/s", "engine tok/s", "engine re-encoding tok/s", "KV-cache speedup", "service first token s", "service batch"], rows));
    const gather = p.service?.gather;
    if (gather) {
      out.push(
        "  optimization, service: a batch waits up to half a step (at most 50 ms) for sequences whose message is still in the transport",
        renderTable(
          ["streams", "no gathering: decode tok/s, batch (before)", "gathering: decode tok/s, batch (after)", "speedup"],
          [[
            String(gather.streams),
            `${formatMeasured(gather.without.decodeTokensPerSecond)}, ${formatNumber(gather.without.meanExpertBatch)}`,
            `${formatMeasured(gather.with.decodeTokensPerSecond)}, ${formatNumber(gather.with.meanExpertBatch)}`,
            formatRatio(gather.speedup),
          ]],
        ),
      );
    }
    if (p.engine.summary.length > 0) {
      out.push(
        "  optimization, engine end to end: the step summary in one pass instead of four",
        renderTable(
          ["streams", "multi-pass tok/s (before)", "one pass tok/s (after)", "speedup"],
          p.engine.summary.map((c) => [String(c.streams), formatMeasured(c.inPasses.tokensPerSecond), formatMeasured(c.singlePass.tokensPerSecond), formatRatio(c.speedup)]),
        ),
      );
    }
  }
  return out;
}

function trainingLines(r: BenchReport): string[] {
  const t = r.training;
  if (!t) return [];
  const row = (name: string, run: typeof t.lora) => [
    name,
    run.backend,
    formatMeasured(run.samplesPerSecond),
    formatMeasured(run.tokensPerSecond),
    formatMeasured(run.achievedGflops),
    formatNumber(run.backendMatmulGflops),
    formatPercent(run.fractionOfMatmul),
    `${mib(run.memory.peakRssBytes)} MiB`,
  ];
  return [
    `Training on the built-in expert's shape (${params(t.lora.parameters)} parameters)`,
    renderTable(["loop", "backend", "samples/s", "tokens/s", "GFLOP/s", "backend matMul GFLOP/s", "of matMul", "peak RSS"], [row("LoRA (selected steps)", t.lora), row("pretraining (sequences)", t.pretrain)]),
    `  LoRA: ${t.lora.what}; pretraining: ${t.pretrain.what}`,
  ];
}

function memoryLines(r: BenchReport): string[] {
  const m = r.memory;
  if (!m) return [];
  const streams = [...new Set(m.inference.flatMap((s) => s.byStreams.map((b) => b.streams)))].sort((a, b) => a - b);
  const rows = m.inference.map((s) => [
    `${s.pair.name} (${params(s.pair.expertParameters)} + ${params(s.pair.amateurParameters)})`,
    mib(s.idle.peakRssBytes),
    ...streams.map((n) => {
      const b = s.byStreams.find((x) => x.streams === n);
      return b ? mib(b.memory.peakRssBytes) : "-";
    }),
    s.perExtraStreamBytes === null ? "-" : mib(s.perExtraStreamBytes),
  ]);
  const out = [
    "Memory: peak resident set (VmHWM, MiB) of `lightreasoner serve inference`, after serving up to N concurrent streams",
    renderTable(["pair", "idle", ...streams.map((n) => `${n} stream${n === 1 ? "" : "s"}`), "per extra stream"], rows),
  ];
  if (m.trainer.length > 0) out.push(`  trainer processes: ${m.trainer.map((t) => `${t.what}: ${mib(t.peakRssBytes)} MiB`).join("; ")}`);
  return out;
}

export function renderReport(report: BenchReport): string {
  const blocks = [machineLines(report), stepLines(report), limitsLines(report), transportLines(report), samplingLines(report), trainingLines(report), memoryLines(report)];
  return blocks
    .filter((b) => b.length > 0)
    .map((b) => b.join("\n"))
    .join("\n\n");
}
