// Where a decode step's time goes: the served graph of a model directory (as the inference
// service builds it for --role: the expert's with LoRA inputs at rank 0, the amateur's
// without) or its exported ONNX file, decoding a batch after a prefill, with ONNX Runtime's
// profiler on. Prints, per decode step, the step's wall time split into feeds built in
// JavaScript / session.run / outputs copied back, then ONNX Runtime's own kernel time summed
// per operator type and per node (layer index folded), so the table says which part of the
// graph or of the code around it costs what.
//   npx tsx bench/decode-profile.ts <modelDir> [--graph served|exported] [--role expert|amateur] [--batch 64]
//     [--prompt 64] [--steps 8] [--threads N] [--top 20] [--op Reshape]
// (--op also lists that operator's nodes one by one, with their output sizes.)
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { argmaxToken } from "#core/math/sampling.ts";
import { SERVED_GRAPH_OPTIONS, onnxFileIn, servedGraph } from "#inference/engine/served-model.ts";
import { CausalLmSession } from "#inference/model/session.ts";
import type { OrtSessionOptions } from "#inference/model/execution-provider.ts";
import { stepInGroups } from "./engine-lockstep.ts";
import { BenchInputError } from "./stats.ts";
import { randomPrompts } from "./workloads.ts";
import { option, positiveInteger } from "./script-option.ts";

interface TraceEvent {
  cat: string;
  name: string;
  ts: number;
  dur: number;
  args?: { op_name?: string; output_size?: string; activation_size?: string };
}

/** Kernel microseconds summed by `key` over the node events inside the given runs. */
function sumBy(nodes: TraceEvent[], key: (e: TraceEvent) => string): Map<string, number> {
  const sums = new Map<string, number>();
  for (const e of nodes) sums.set(key(e), (sums.get(key(e)) ?? 0) + e.dur);
  return sums;
}

function printTable(title: string, sums: Map<string, number>, steps: number, total: number, top: number): void {
  console.log(`\n${title} (ms per step, share of kernel time)`);
  const rows = [...sums].sort((a, b) => b[1] - a[1]);
  for (const [name, us] of rows.slice(0, top)) console.log(`  ${(us / 1000 / steps).toFixed(2).padStart(9)}  ${((100 * us) / total).toFixed(1).padStart(5)}%  ${name}`);
  if (rows.length > top) {
    const rest = rows.slice(top).reduce((n, [, us]) => n + us, 0);
    console.log(`  ${(rest / 1000 / steps).toFixed(2).padStart(9)}  ${((100 * rest) / total).toFixed(1).padStart(5)}%  (${rows.length - top} more)`);
  }
}

const args = process.argv.slice(2);
const dir = args[0];
if (!dir || dir.startsWith("--")) throw new BenchInputError("modelDir", "usage: decode-profile.ts <modelDir> [--graph served|exported] [--role expert|amateur] [--batch 64] [--prompt 64] [--steps 8] [--threads N] [--top 20]");
const graph = option(args, "--graph", "served");
if (graph !== "served" && graph !== "exported") throw new BenchInputError("--graph", `must be served or exported, got ${graph}`);
const role = option(args, "--role", "expert");
if (role !== "expert" && role !== "amateur") throw new BenchInputError("--role", `must be expert or amateur, got ${role}`);
const batch = positiveInteger(args, "--batch", 64);
const promptTokens = positiveInteger(args, "--prompt", 64);
const steps = positiveInteger(args, "--steps", 8);
const top = positiveInteger(args, "--top", 20);
const listOp = option(args, "--op", "");
const threads = args.includes("--threads") ? positiveInteger(args, "--threads", 1) : undefined;

const traceDir = mkdtempSync(join(tmpdir(), "lr-decode-profile-"));
try {
  const options: OrtSessionOptions = { executionProvider: "cpu", threads, profileFilePrefix: join(traceDir, "trace") };
  let session: CausalLmSession;
  let vocab: number;
  if (graph === "served") {
    const built = servedGraph(dir, SERVED_GRAPH_OPTIONS[role]);
    session = await CausalLmSession.open(built.graph, options);
    vocab = built.config.vocabSize;
  } else {
    const file = onnxFileIn(dir);
    if (!file) throw new BenchInputError("modelDir", `${dir} has no exported ONNX file (onnx/model.onnx)`);
    session = await CausalLmSession.open(file, options);
    vocab = session.io.vocabSize ?? 0;
  }
  const prompts = randomPrompts(vocab, batch, promptTokens, 37);
  const caches = prompts.map(() => session.newCache());
  let out = await stepInGroups(session, prompts.map((tokens, b) => ({ cache: caches[b], tokens })), 8);
  // One untimed decode step: ONNX Runtime sizes its buffers on a shape's first run.
  out = await session.step(out.map((o, b) => ({ cache: caches[b], tokens: [argmaxToken(o.logProbs)] })));
  const firstTimed = performance.now();
  const phases = { wall: 0, prepare: 0, run: 0, collect: 0 };
  for (let s = 0; s < steps; s++) {
    const started = performance.now();
    out = await session.step(out.map((o, b) => ({ cache: caches[b], tokens: [argmaxToken(o.logProbs)] })));
    phases.wall += performance.now() - started;
    phases.prepare += session.lastPhases.prepareMs;
    phases.run += session.lastPhases.runMs;
    phases.collect += session.lastPhases.collectMs;
  }
  const timedMs = performance.now() - firstTimed;
  session.endProfiling();
  await session.release();

  const file = readdirSync(traceDir).find((f) => f.endsWith(".json"));
  if (!file) throw new Error(`ONNX Runtime wrote no trace into ${traceDir}`);
  const events = JSON.parse(readFileSync(join(traceDir, file), "utf8")) as TraceEvent[];
  const runs = events.filter((e) => e.cat === "Session" && e.name === "model_run").slice(-steps);
  const inTimedRuns = (e: TraceEvent) => runs.some((r) => e.ts >= r.ts && e.ts <= r.ts + r.dur);
  const nodes = events.filter((e) => e.cat === "Node" && e.name.endsWith("_kernel_time") && inTimedRuns(e));
  const kernelUs = nodes.reduce((n, e) => n + e.dur, 0);
  const runUs = runs.reduce((n, r) => n + r.dur, 0);

  const perStep = (ms: number) => (ms / steps).toFixed(1);
  console.log(JSON.stringify({ dir, graph, batch, promptTokens, steps, threads: threads ?? "ONNX Runtime default", tokensPerSecond: Number(((batch * steps) / (timedMs / 1000)).toFixed(1)) }));
  console.log(`\nper decode step (ms): wall ${perStep(phases.wall)} = feeds ${perStep(phases.prepare)} + session.run ${perStep(phases.run)} + outputs ${perStep(phases.collect)}`);
  console.log(`inside session.run: model_run ${perStep(runUs / 1000)}, of which kernels ${perStep(kernelUs / 1000)} (the rest: ONNX Runtime between kernels, copying feeds and fetches)`);
  printTable("by operator type", sumBy(nodes, (e) => e.args?.op_name ?? "?"), steps, kernelUs, top);
  printTable("by node, layer index folded", sumBy(nodes, (e) => e.name.replace(/_kernel_time$/, "").replace(/\d+/g, "#")), steps, kernelUs, top);
  if (listOp) {
    const ofOp = nodes.filter((e) => e.args?.op_name === listOp);
    printTable(`${listOp} nodes, with output bytes`, sumBy(ofOp, (e) => `${e.name.replace(/_kernel_time$/, "")} (${e.args?.output_size ?? "?"} B out)`), steps, kernelUs, top);
  }
} finally {
  rmSync(traceDir, { recursive: true, force: true });
}
