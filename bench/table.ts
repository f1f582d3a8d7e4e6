// The benchmark report as the plain-text tables printed on stdout: every figure is a median
// over repeats with its range in parentheses, every comparison a ratio of medians from the
// same run. Pure functions of the report, so the same bench.json always prints the same.
import type { BenchReport } from "./run-bench.ts";
import { blasKind as blasKindOf } from "./limits.ts";
import type { ServiceMemory } from "./memory.ts";
import type { TransportBreakdown } from "./transport.ts";
import { formatBytes, formatMeasured, formatNumber, formatPercent, formatRatio } from "./stats.ts";
import type { Measured } from "./stats.ts";
import { describeLoraScale } from "./lora-scale.ts";
import { renderTable } from "./text-table.ts";

const mib = (bytes: number) => formatNumber(bytes / 2 ** 20);
/** Every table names the CPU it was measured on: machines of one kind differ. */
const on = (r: BenchReport) => ` on ${r.machine.cpuModel}`;
const LIBRARY_NAMES = { onnxruntime: "ONNX Runtime", torch: "PyTorch", numpy: "numpy" } as const;
const params = (n: number) => (n >= 1e6 ? `${formatNumber(n / 1e6)}M` : formatNumber(n));

function machineLines(r: BenchReport): string[] {
  const m = r.machine;
  const stolen = m.stolenShare === undefined || m.stolenShare === null ? "" : `, ${formatPercent(m.stolenShare)} of CPU time stolen by the host`;
  const load = `load ${formatNumber(m.loadAverageAtStart)} at start, ${formatNumber(m.loadAverageAtEnd)} at end${stolen}`;
  const sections = r.sections.map((s) => `${s} ${formatNumber(r.sectionSeconds[s])} s`).join(", ");
  return [
    `lightreasoner bench${r.quick ? " --quick" : ""}: ${formatNumber(r.wallSeconds)} s (${sections})`,
    `machine: ${m.cpuModel}, ${m.cores} cores [${m.vectorFeatures.join(" ")}], ${m.memoryGiB} GiB, ${m.platform}, node ${m.node}, onnxruntime-node ${m.onnxruntimeNode}, tfjs ${m.tfjs}, GLIBC_TUNABLES ${m.glibcTunables ?? "unset"}, node flags ${m.nodeFlags?.join(" ") || "none"}; ${load}`,
    "figures: median (min-max) over repeats; ratios are of medians measured in this run",
  ];
}

function stepLines(r: BenchReport): string[] {
  const s = r.step;
  if (!s) return [];
  return [
    `Per-step distribution work${on(r)} at vocabulary ${formatNumber(s.vocabSize)} (ms per stream and step; alpha ${s.alpha}, top-k ${s.topK})`,
    renderTable(
      ["work", "ms", "vs. multi-pass"],
      [
        ["log-softmax of one model's logits in JavaScript (now inside the model graph)", formatMeasured(s.logSoftmaxMs), ""],
        ["SPARSE summary in JavaScript, multi-pass", formatMeasured(s.summaryInPassesMs), ""],
        ["SPARSE summary in JavaScript, one pass", formatMeasured(s.summarySinglePassMs), `${formatRatio(s.speedup)} faster`],
      ],
    ),
    "SPARSE summary per stream-step, JavaScript one pass against the server's ONNX Runtime graph (wall and process CPU ms; rows = stream-steps of one scheduler step)",
    renderTable(
      ["rows", "JavaScript", "JS CPU", "ONNX Runtime graph", "graph CPU", "speedup", "CPU speedup"],
      s.native.map((n) => [String(n.rows), formatMeasured(n.javascriptMs), formatMeasured(n.javascriptCpuMs), formatMeasured(n.nativeMs), formatMeasured(n.nativeCpuMs), formatRatio(n.speedup), formatRatio(n.cpuSpeedup)]),
    ),
    `one stream-step's summary alone on the graph, its rows out of the caches and no JavaScript work around it: ${formatMeasured(s.aloneColdMs)} ms`,
    `FULL float16 rounding of both rows: JavaScript ${formatMeasured(s.float16.javascriptMs)} ms, ONNX Runtime Cast ${formatMeasured(s.float16.nativeMs)} ms (${formatRatio(s.float16.speedup)} faster)`,
    ...s.sampling.map((r) => `sampling one row (T 1, top-p ${r.topP}, the same token both ways): JavaScript sampleToken ${formatMeasured(r.javascriptMs)} ms, ONNX Runtime graph ${formatMeasured(r.nativeMs)} ms (${formatRatio(r.speedup)} faster)`),
  ];
}

function peerLine(p: NonNullable<BenchReport["limits"]>["peers"][number]): string {
  const name = LIBRARY_NAMES[p.library];
  if (!p.available) return `  ${name}: not measured (${p.missing} is missing here; install: ${p.install})`;
  const threads = p.threads === null || p.threads === undefined ? "" : `, ${p.threads} threads`;
  return `  ${name} ${p.version} on ${p.blas} (${(p.blasLibraries ?? []).join(", ")})${threads}, ${p.interpreter}`;
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
  const peerRate = (library: "torch" | "numpy", m: { m: number; k: number; n: number }) => {
    const peer = l.peers.find((p) => p.library === library);
    const rate = peer?.matmul.find((x) => x.m === m.m && x.k === m.k && x.n === m.n);
    return rate ? formatMeasured(rate.gflops) : peer && !peer.available ? "not installed" : "-";
  };
  const by = l.peakBy;
  return [
    `Limit: float32 MatMul${on(r)} (GFLOP/s), ONNX Runtime beside PyTorch and numpy in this run`,
    renderTable(
      ["shape", "ONNX Runtime", "PyTorch", "numpy"],
      l.matmul.map((m) => [`[${m.m}x${m.k}] x [${m.k}x${m.n}]`, formatMeasured(m.gflops), peerRate("torch", m), peerRate("numpy", m)]),
    ),
    ...l.peers.map(peerLine),
    `Memory read${on(r)} (GB/s, a ${formatBytes(l.readBytes)} float32 array summed): ONNX Runtime ${formatMeasured(l.memoryRead)}, ${l.peers.map((p) => `${LIBRARY_NAMES[p.library]} ${p.memoryRead ? formatMeasured(p.memoryRead) : "-"}`).join(", ")}; read peak ${formatNumber(l.peakReadGBs)} (${LIBRARY_NAMES[l.peakReadBy]})`,
    "",
    `Ceiling = ${formatNumber(l.peakGflops)} GFLOP/s (${LIBRARY_NAMES[by.library]} at [${by.m}x${by.k}] x [${by.k}x${by.n}], the best of this run; ONNX Runtime's best ${formatNumber(l.onnxruntimePeakGflops)}) / (expert + amateur FLOPs per token); reached by the service (sampling section)${on(r)}`,
    renderTable(["pair", "FLOPs/token", "ceiling tok/s", "best tok/s (streams)", "of ceiling", "best decode tok/s", "of ceiling"], rows),
  ];
}

function amateurLines(r: BenchReport): string[] {
  const a = r.amateur;
  if (!a) return [];
  const cost = a.pairs.map((p) => [
    `${p.pair.name} (${params(p.pair.amateurParameters)})`,
    `${p.promptTokens} + ${p.newTokens}`,
    String(p.cost.streams),
    `${formatNumber(p.positions.lockstep)} / ${formatNumber(p.positions.reencode)} (${formatRatio(p.positions.ratio)})`,
    formatMeasured(p.cost.lockstepSeconds),
    formatMeasured(p.cost.reencodeSeconds),
    `${formatRatio(p.cost.speedup)} (${formatRatio(p.multiplyAdds.reencodeRatio)})`,
    formatMeasured(p.cost.reencodeEveryPositionSeconds),
    `${formatRatio(p.cost.everyPositionSpeedup)} (${formatRatio(p.multiplyAdds.everyPositionRatio)})`,
  ]);
  const out = [
    `The amateur's cost${on(r)}: the amateur alone scoring trajectories (prompt + new tokens), the same batch every way`,
    `how: ${a.how}`,
    renderTable(
      [
        "amateur",
        "tokens",
        "streams",
        "positions/trajectory: lockstep / re-encoding",
        "lockstep s",
        "re-encoding s (head at the last position)",
        "/ lockstep (multiply-adds)",
        "re-encoding s as the reference does: LM head at every position",
        "/ lockstep (multiply-adds)",
      ],
      cost,
    ),
    ...r.derived.amateurHeadBounds.map(
      (b) =>
        `  ${b.pair}: the LM head alone, [${b.rows}x${b.hidden}] x [${b.hidden}x${formatNumber(b.vocab)}] at this run's best rate on it (${formatNumber(b.gflops)} GFLOP/s, ${b.library}), takes ${formatNumber(b.headSeconds)} s of lockstep's ${formatNumber(b.lockstepSeconds)}: ` +
        `with nothing else to do, lockstep could beat the reference's way by ${formatRatio(b.maxRatio)} at most on this machine; ` +
        `read once a step at the memory-read peak, its ${formatBytes(b.headBytes)} of weights would take ${formatNumber(b.readPeakSeconds)} s`,
    ),
  ];
  const ends = a.pairs.filter((p) => p.endToEnd);
  if (ends.length > 0) {
    const ceiling = r.derived.endToEndCeiling;
    out.push(
      "",
      `End to end at the same lengths${on(r)}: expert + amateur in lockstep + SPARSE summary every step; ceiling from the limits section of this run`,
      renderTable(
        ["pair", "tokens", "streams", "tok/s", "decode tok/s", "ceiling tok/s (GFLOP/s)", "of ceiling", "decode of ceiling", "at the best rate on as many rows (GFLOP/s)", "of it"],
        ends.map((p) => {
          const e = p.endToEnd!;
          const c = ceiling.find((x) => x.pair === p.pair.name);
          return [
            p.pair.name,
            `${p.promptTokens} + ${e.newTokens}`,
            String(e.streams),
            formatMeasured(e.tokensPerSecond),
            formatMeasured(e.decodeTokensPerSecond),
            c ? `${formatNumber(c.ceilingTokensPerSecond)} (${formatNumber(c.ceilingGflops)})` : "no limits section in this run",
            c ? formatPercent(c.fraction) : "-",
            c ? formatPercent(c.decodeFraction) : "-",
            c?.batchRowsTokensPerSecond ? `${formatNumber(c.batchRowsTokensPerSecond)} (${formatNumber(c.batchRowsGflops!)})` : "no limits shape of that many rows",
            c?.batchRowsFraction ? formatPercent(c.batchRowsFraction) : "-",
          ];
        }),
      ),
      ...ends.map((p) => {
        const ms = p.endToEnd!.decodeStepMs;
        const share = (part: Measured) => formatPercent(part.median / ms.step.median);
        return `  ${p.pair.name}: a decode step ${formatNumber(ms.step.median)} ms = expert ${formatNumber(ms.expert.median)} (${share(ms.expert)}) + amateur ${formatNumber(ms.amateur.median)} (${share(ms.amateur)}) + summaries ${formatNumber(ms.summary.median)} (${share(ms.summary)}) + the loop's own work (medians)`;
      }),
    );
  }
  return out;
}

function decodeLines(r: BenchReport): string[] {
  const d = r.decode;
  if (!d) return [];
  const peer = d.torch ? `PyTorch ${d.torch.version} eager on ${blasKindOf(d.torch.blas)}, ${d.torch.threads} threads` : `PyTorch not measured (${d.torchMissing?.missing} is missing here; install: ${d.torchMissing?.install})`;
  const parity = d.parity
    ? `  same computation: log-probabilities of ${d.parity.positions} positions (a ${d.parity.prefillTokens}-token prefill, then ${d.parity.decodeTokens} cached steps), max abs log-prob diff ONNX Runtime vs PyTorch ${d.parity.maxAbsDiff.toExponential(2)} (largest |log-prob| ${formatNumber(d.parity.maxAbsLogProb)}), same argmax at ${d.parity.sameArgmax} of ${d.parity.positions}`
    : "  log-probabilities not compared: PyTorch is not installed";
  const rooflines = r.derived.decodeRooflines;
  const rooflineCells = (batch: number) => {
    const b = rooflines.find((x) => x.batch === batch);
    if (!b) return ["-", "-", "-"];
    return [`${formatNumber(b.tokensPerSecond)} (${b.boundBy})`, formatPercent(b.onnxruntimeFraction), b.torchFraction === null ? "-" : formatPercent(b.torchFraction)];
  };
  return [
    `Expert decode${on(r)}: ${d.pair.name} expert (${params(d.pair.expertParameters)}), tokens/s of ${d.stepsPerRepeat} greedy steps after a ${d.promptTokens}-token prompt, ${d.repeats} repeats; ${peer}`,
    `how: ${d.how}`,
    renderTable(
      ["batch", "ONNX Runtime tok/s", "PyTorch eager tok/s", "ONNX Runtime / PyTorch", "roofline tok/s (bound by)", "ONNX Runtime of roofline", "PyTorch of roofline"],
      d.rows.map((row) => [String(row.batch), formatMeasured(row.onnxruntime), row.torch ? formatMeasured(row.torch) : "-", formatRatio(row.speedup), ...rooflineCells(row.batch)]),
    ),
    "  roofline: a step must read its weights (once for the batch) and each row's keys and values at this run's memory-read peak, and do its FLOPs at the MatMul ceiling (limits section); the slower of the two bounds it",
    parity,
  ];
}

function adaptersLines(r: BenchReport): string[] {
  const a = r.adapters;
  if (!a) return [];
  const rows = a.pairs.flatMap((p) =>
    p.rows.map((row) => [`${p.pair.name} (${params(p.pair.expertParameters)})`, String(row.streams), formatMeasured(row.one), formatMeasured(row.mixed), formatPercent(row.ratio)]),
  );
  const windows = a.pairs.map((p) => `${p.pair.name}: ${p.stepsPerRepeat} steps after a ${p.promptTokens}-token prompt, ${p.repeats} repeats`).join("; ");
  return [
    `Adapters mixed in one batch${on(r)}: expert decode tokens/s with every row on one adapter and with ${a.adapters} adapters (rank ${a.rank}) mixed; ${windows}`,
    `how: ${a.how}`,
    renderTable(["pair", "streams", "one adapter tok/s", `${a.adapters} mixed tok/s`, "mixed / one"], rows),
  ];
}

function transportLines(r: BenchReport): string[] {
  const t = r.transport;
  if (!t) return [];
  // The breakdown's columns, in the order the two tables name them.
  const layers = (b: TransportBreakdown) => [b.tcpMs, b.http2Ms, b.grpcJsMs, b.protobufMs, b.clientMs, b.defaultWindowMs].map(formatNumber);
  const pct = (m: { median: number; min: number; max: number }) => `${formatPercent(m.median)} (${formatPercent(m.min)}-${formatPercent(m.max)})`;
  return [
    `Transport on loopback${on(r)}, vocabulary ${formatNumber(t.vocabSize)} (steps per second; one step = both models' distributions)`,
    renderTable(
      ["encoding", "bytes/step", "gRPC steps/s, grpc-js window (64 KiB)", "gRPC, the project's client (8 MiB window)", "raw TCP steps/s", "grpc-js window/TCP, per repeat", "project's client/TCP, per repeat", "project's client MiB/s", "encode ms/step"],
      t.rows.map((row) => [
        row.encoding,
        formatBytes(row.bytesPerStep),
        formatMeasured(row.grpcStepsPerSecond),
        formatMeasured(row.grpcWideWindowStepsPerSecond),
        formatMeasured(row.tcpStepsPerSecond),
        pct(row.grpcOverTcpPerRepeat),
        pct(row.grpcWideWindowOverTcpPerRepeat),
        formatNumber((row.grpcWideWindowStepsPerSecond.median * row.bytesPerStep) / 2 ** 20),
        formatMeasured(row.encodeMsPerStep),
      ]),
    ),
    "  where a step's time goes (ms per step): raw TCP, then what each layer adds at the project's client window (8 MiB: plain HTTP/2, grpc-js, protobuf), which sum to the project's client; then what grpc-js's own 64 KiB window would add to it; from this run's medians; server and client overlap, so the CPU work timed alone need not add up",
    renderTable(
      ["encoding", "raw TCP", "+ HTTP/2", "+ grpc-js", "+ protobuf", "= project's client", "64 KiB window adds", "HTTP/2 steps/s (64 KiB / 8 MiB)", "bytes-only gRPC steps/s (64 KiB / 8 MiB)", "alone: serializeMessage / toBinary", "5-byte prefix copy", "fromBinary"],
      t.rows.map((row) => [
        row.encoding,
        ...layers(row.breakdown),
        `${formatMeasured(row.http2StepsPerSecond)} / ${formatMeasured(row.http2WideWindowStepsPerSecond)}`,
        `${formatMeasured(row.rawGrpcStepsPerSecond)} / ${formatMeasured(row.rawGrpcWideWindowStepsPerSecond)}`,
        `${formatMeasured(row.serializeMsPerStep)} / ${formatMeasured(row.toBinaryMsPerStep)}`,
        formatMeasured(row.frameCopyMsPerStep),
        formatMeasured(row.parseMsPerStep),
      ]),
    ),
    "  the same layers in CPU time (ms per step, every thread of the server and the client together; each variant's least repeat, since a disturbance only adds time; then the median and spread of the project's client and of TCP): the work each layer adds; the totals repeat across runs where the rates above swing with scheduling, the single layers less so",
    renderTable(
      ["encoding", "raw TCP", "+ HTTP/2", "+ grpc-js", "+ protobuf", "= project's client", "64 KiB window adds", "project's client, median (range)", "raw TCP, median (range)", "TCP / project's client"],
      t.rows.map((row) => [
        row.encoding,
        ...layers(row.cpuBreakdown),
        formatMeasured(row.cpuMsPerStep.grpcWide),
        formatMeasured(row.cpuMsPerStep.tcp),
        formatPercent(row.cpuBreakdown.tcpMs / row.cpuBreakdown.clientMs),
      ]),
    ),
  ];
}

function samplingLines(r: BenchReport): string[] {
  const s = r.sampling;
  if (!s) return [];
  const out = [`Lockstep sampling${on(r)} (tokens/s: expert writes, amateur scores, SPARSE summary every step)`, `how: ${s.how}`];
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
    `Training${on(r)} on the built-in expert's shape (${params(t.lora.parameters)} parameters)`,
    renderTable(["loop", "backend", "samples/s", "tokens/s", "GFLOP/s", "backend matMul GFLOP/s", "of matMul", "peak RSS"], [row("LoRA (selected steps)", t.lora), row("pretraining (sequences)", t.pretrain)]),
    `  LoRA: ${t.lora.what}; pretraining: ${t.pretrain.what}`,
  ];
}

function scaleLines(r: BenchReport): string[] {
  const s = r.scale;
  if (!s) return [];
  const title = `LoRA training at the Qwen2.5-0.5B shape${on(r)} (scripts/lora-scale.mjs in its own process)`;
  if (!s.measured) return [title, `  not measured: ${s.reason}`];
  return [title, ...describeLoraScale(s).map((line) => `  ${line}`)];
}

/** Growth per extra stream less the mapped weight pages' growth: what serving a stream allocated. */
const allocated = (s: ServiceMemory) => (s.perExtraStreamBytes === null ? null : s.perExtraStreamBytes - (s.perExtraStreamFileBytes ?? 0));

/** The longest event-loop hold at the most streams served, in ms, with that stream count. */
function mostStreamsHold(s: { byStreams: { streams: number; eventLoopHoldSeconds: number }[] }): string {
  const most = s.byStreams.at(-1);
  return most ? `${formatNumber(most.eventLoopHoldSeconds * 1000)} (${most.streams})` : "-";
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
    s.perExtraStreamFileBytes === null ? "-" : mib(s.perExtraStreamFileBytes),
    allocated(s) === null ? "-" : mib(allocated(s)!),
    `${mib(s.kvCachePerStreamBytes)} (${s.promptTokens} + ${s.newTokens})`,
    allocated(s) === null ? "-" : mib(allocated(s)! - s.kvCachePerStreamBytes),
    mib(s.afterwards.rssBytes),
    mostStreamsHold(s),
  ]);
  const out = [
    `Memory${on(r)}: peak resident set (VmHWM, MiB) of \`lightreasoner serve inference\`, after serving up to N concurrent streams`,
    renderTable(["pair", "idle", ...streams.map((n) => `${n} stream${n === 1 ? "" : "s"}`), "per extra stream", "of it, mapped weight pages", "allocated", "its KV cache (tokens)", "allocated - KV", "resident after, 1 stream", "longest event-loop hold, ms (streams)"], rows),
    "  its KV cache: one stream's keys and values in both models (float32) at its prompt + new tokens; goal: per extra stream <= KV cache + 5 MiB",
    "  mapped weight pages: growth of RssFile, the embedding rows read from the mapped weight files for the token ids seen (random prompts: more streams, more distinct ids); clean page cache, bounded by the files",
    "  allocated: per extra stream less its mapped weight pages, the memory the stream's serving allocated (KV, buffers, activations, garbage not yet collected)",
    "  resident after: VmRSS once the most streams are done and one more has been served, what the service keeps after a burst (the batch's KV buffers shrink to the rows in use; ONNX Runtime's arena and the malloc heap keep their pages)",
    "  longest event-loop hold: the most the service's event loop was held at once while serving the most streams (ONNX Runtime runs a model step on it), when no gRPC message, health check or scrape is answered",
  ];
  if (m.trainer.length > 0) out.push(`  trainer processes: ${m.trainer.map((t) => `${t.what}: ${mib(t.peakRssBytes)} MiB`).join("; ")}`);
  return out;
}

export function renderReport(report: BenchReport): string {
  const blocks = [machineLines(report), stepLines(report), limitsLines(report), amateurLines(report), decodeLines(report), adaptersLines(report), transportLines(report), samplingLines(report), trainingLines(report), scaleLines(report), memoryLines(report)];
  return blocks
    .filter((b) => b.length > 0)
    .map((b) => b.join("\n"))
    .join("\n\n");
}
