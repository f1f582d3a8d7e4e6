// Section "limits": what this machine can do at best. A one-node MatMul graph, written with
// the project's own ONNX graph builder and run by ONNX Runtime exactly as the models run
// (CPU provider, default threads), gives the float32 matrix-multiply rate, and PyTorch and
// numpy (bench/peers/matmul.py) are timed on the same shapes in the same run, with the BLAS
// library they loaded named. The best rate any of them reached is the machine's ceiling; the
// model pairs' FLOPs per generated token turn it into tokens per second, which the sampling
// and amateur sections' measured rates are held against. A decode step at a small batch does
// few FLOPs per weight it reads, so the rate at which the cores stream memory bounds it
// instead: a one-node ReduceSum graph, PyTorch and numpy (bench/peers/memory_read.py) each sum
// a float32 array far larger than the caches, and the best rate is the machine's read peak.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { SeededRandom } from "#core/math/random.ts";
import { parseModelConfig } from "#core/model/config.ts";
import type { ModelConfig } from "#core/model/config.ts";
import { openOrtSession } from "#inference/model/execution-provider.ts";
import { GraphBuilder, int } from "#core/formats/onnx-builder.ts";
import { encodeInline } from "#core/formats/onnx-file.ts";
import type { TokenFlops } from "./flops.ts";
import { flopsPerToken, meanContext } from "./flops.ts";
import type { PairRecipe } from "./models.ts";
import { REPO_ROOT } from "./paths.ts";
import { ensureWorld, worldPrompts } from "./workloads.ts";
import type { BenchSettings, PairWorkload } from "./settings.ts";
import type { Measured } from "./stats.ts";
import { BenchInputError, measured, repeat } from "./stats.ts";
import type { PeerLibrary } from "./python-peers.ts";
import { runPeer } from "./python-peers.ts";

export interface MatmulRate {
  /** [m, k] x [k, n]. */
  m: number;
  k: number;
  n: number;
  gflops: Measured;
}

export interface PairCeiling {
  /** The sampling workload's name. */
  pair: string;
  /** Mean context the FLOPs were computed at (the sampling workload's prompt + half its tokens). */
  context: number;
  expert: TokenFlops;
  amateur: TokenFlops;
  /** Expert + amateur FLOPs per lockstep token. */
  flopsPerToken: number;
  /** peak GFLOP/s / FLOPs per token. */
  ceilingTokensPerSecond: number;
}

/** A Python library's MatMul on the same shapes and its memory-read rate, or why they were not measured. */
export interface PeerMatmul {
  library: PeerLibrary;
  available: boolean;
  /** When not available: what was missing and how to install it. */
  missing?: string;
  install?: string;
  interpreter?: string;
  version?: string;
  /** Threads PyTorch was told to use; null for numpy (its BLAS decides). */
  threads?: number | null;
  /** The BLAS shared libraries the peer's process had loaded, and what they are. */
  blasLibraries?: string[];
  blas?: string;
  matmul: MatmulRate[];
  /** GB/s streaming a float32 array through a sum (PyTorch on every core, numpy on one); null when not measured. */
  memoryRead: Measured | null;
  /** Why an installed peer has no memory-read rate. */
  memoryReadFailure?: string;
}

export type MatmulLibrary = "onnxruntime" | PeerLibrary;

export interface LimitsResult {
  how: string;
  /** The CPU, as /proc/cpuinfo names it. */
  cpuModel: string;
  /** ONNX Runtime's rates. */
  matmul: MatmulRate[];
  peers: PeerMatmul[];
  /** The best median over every library and shape: the ceiling's rate. */
  peakGflops: number;
  peakBy: { library: MatmulLibrary; m: number; k: number; n: number };
  /** ONNX Runtime's own best median (the rate the project's models could reach at best). */
  onnxruntimePeakGflops: number;
  /** ONNX Runtime's memory-read rate (ReduceSum over `readBytes`), GB/s. */
  memoryRead: Measured;
  readBytes: number;
  /** The best median read rate of the three, GB/s, and whose: the memory side of the roofline. */
  peakReadGBs: number;
  peakReadBy: MatmulLibrary;
  pairs: PairCeiling[];
}

/** What a list of loaded BLAS libraries is, in words; the reference BLAS is flagged as slow. */
export function blasKind(libraries: readonly string[]): string {
  const all = libraries.join(" ").toLowerCase();
  if (all.includes("openblas")) return "OpenBLAS";
  if (all.includes("mkl")) return "MKL";
  if (all.includes("blis")) return "BLIS";
  if (/\/blas\/libblas/.test(all)) return "reference BLAS (slow: install libopenblas0-openmp)";
  return libraries.length === 0 ? "none loaded" : "unknown";
}

interface PeerMatmulAnswer {
  library: PeerLibrary;
  version: string;
  threads: number | null;
  blas: string[];
  shapes: { m: number; k: number; n: number; gflops: number[] }[];
}

interface PeerReadAnswer {
  gbPerSecond: number[];
}

/** PyTorch's or numpy's MatMul rates on `shapes` and memory-read rate over `readBytes`; a missing library is reported, not measured. */
export async function measurePeerMatmul(library: PeerLibrary, shapes: readonly [number, number, number][], options: { minMs: number; repeats: number; readBytes: number }): Promise<PeerMatmul> {
  const budgetMs = 120_000 + shapes.length * (options.repeats + 1) * options.minMs * 4;
  const outcome = await runPeer<PeerMatmulAnswer>("matmul.py", { library, shapes, minMs: options.minMs, repeats: options.repeats }, budgetMs);
  if (!outcome.ok) return { library, available: false, missing: outcome.missing, install: outcome.install, matmul: [], memoryRead: null };
  // A failed read (the array did not fit, say) leaves the peer's MatMul rates standing.
  const read = await runPeer<PeerReadAnswer>("memory_read.py", { library, bytes: options.readBytes, minMs: options.minMs, repeats: options.repeats }, 120_000 + (options.repeats + 1) * options.minMs * 4).catch(
    (err: unknown) => ({ ok: false as const, reason: (err as Error).message }),
  );
  const r = outcome.result;
  return {
    library,
    available: true,
    interpreter: outcome.interpreter,
    version: r.version,
    threads: r.threads,
    blasLibraries: r.blas,
    blas: blasKind(r.blas),
    matmul: r.shapes.map((x) => ({ m: x.m, k: x.k, n: x.n, gflops: measured(x.gflops, "GFLOP/s") })),
    memoryRead: read.ok ? measured(read.result.gbPerSecond, "GB/s") : null,
    ...(read.ok ? {} : { memoryReadFailure: "reason" in read ? read.reason : `${read.missing} is missing` }),
  };
}

/** Every rate of a run beside the library that measured it. */
function ratesOf(onnxruntime: readonly MatmulRate[], peers: readonly PeerMatmul[]): { library: MatmulLibrary; rate: MatmulRate }[] {
  return [...onnxruntime.map((rate) => ({ library: "onnxruntime" as const, rate })), ...peers.flatMap((p) => p.matmul.map((rate) => ({ library: p.library, rate })))];
}

/** The rate with the best median (the first of equals); null for none. */
function fastest<T extends { rate: MatmulRate }>(rates: readonly T[]): T | null {
  return rates.length === 0 ? null : rates.reduce((a, b) => (b.rate.gflops.median > a.rate.gflops.median ? b : a));
}

/** The best median over every library's shapes. */
export function peakOf(onnxruntime: readonly MatmulRate[], peers: readonly PeerMatmul[]): { gflops: number; by: LimitsResult["peakBy"] } {
  const best = fastest(ratesOf(onnxruntime, peers));
  if (!best) throw new BenchInputError("matmul", "holds no measured rate");
  const { m, k, n, gflops } = best.rate;
  return { gflops: gflops.median, by: { library: best.library, m, k, n } };
}

/**
 * The best median any library reached on the shapes with `rows` rows (a decode step's batch of
 * that many streams): the rate such a step's matrix products could run at on this machine,
 * where the 1024-cubed ceiling is out of reach for short rows. Null when no shape has them.
 */
export function bestRateAtRows(limits: Pick<LimitsResult, "matmul" | "peers">, rows: number): number | null {
  return fastest(ratesOf(limits.matmul, limits.peers).filter(({ rate }) => rate.m === rows))?.rate.gflops.median ?? null;
}

/** The best median any library reached on exactly [m, k] x [k, n], and which library; null when the run did not measure that shape. */
export function bestRateOn(limits: Pick<LimitsResult, "matmul" | "peers">, m: number, k: number, n: number): { gflops: number; library: MatmulLibrary } | null {
  const best = fastest(ratesOf(limits.matmul, limits.peers).filter(({ rate }) => rate.m === m && rate.k === k && rate.n === n));
  return best && { gflops: best.rate.gflops.median, library: best.library };
}

/** Billions of `perRun` units (bytes, FLOPs) per second over back-to-back runs of `feeds`, each repeat at least `minMs` long. */
function runRate(session: ort.InferenceSession, feeds: Record<string, ort.Tensor>, perRun: number, unit: string, options: { minMs: number; repeats: number }): Promise<Measured> {
  return repeat({ repeats: options.repeats, warmup: 1, unit }, async () => {
    let runs = 0;
    const start = performance.now();
    let elapsed = 0;
    while (elapsed < options.minMs) {
      await session.run(feeds);
      runs++;
      elapsed = performance.now() - start;
    }
    return (perRun * runs) / (elapsed / 1000) / 1e9;
  });
}

/** The best median memory-read rate of ONNX Runtime and the peers that measured one. */
export function peakReadOf(onnxruntime: Measured, peers: readonly PeerMatmul[]): { gbPerSecond: number; by: MatmulLibrary } {
  const rates = [{ by: "onnxruntime" as MatmulLibrary, rate: onnxruntime }, ...peers.flatMap((p) => (p.memoryRead ? [{ by: p.library as MatmulLibrary, rate: p.memoryRead }] : []))];
  const best = rates.reduce((a, b) => (b.rate.median > a.rate.median ? b : a));
  return { gbPerSecond: best.rate.median, by: best.by };
}

/** An ONNX model summing a float32 vector: each value read once, nothing written. */
function sumModel(): Uint8Array {
  const g = new GraphBuilder();
  const x = g.input("x", "float32", ["n"]);
  g.op("ReduceSum", [x], { keepdims: int(0) }, { outputs: ["sum"] });
  g.output("sum", "sum", "float32", []);
  return encodeInline(g, { graphName: "memory_read" });
}

/** GB/s at which ONNX Runtime's ReduceSum reads `bytes` of float32 (fed without a copy), running for at least `minMs` per repeat. */
export async function measureOrtRead(bytes: number, options: { minMs: number; repeats: number }): Promise<Measured> {
  const { session } = await openOrtSession(sumModel(), { executionProvider: "cpu" });
  try {
    const count = Math.floor(bytes / 4);
    const feeds = { x: new ort.Tensor("float32", new Float32Array(count).fill(1), [count]) };
    const sum = (await session.run(feeds)).sum.data as Float32Array;
    if (!(sum[0] > 0)) throw new BenchInputError("memory read", `ReduceSum of ${count} ones gave ${sum[0]}`);
    return await runRate(session, feeds, count * 4, "GB/s", options);
  } finally {
    await session.release();
  }
}

/** An ONNX model computing Y = X W with W [k, n] as a weight, as every linear layer of the models does. */
export function matmulModel(k: number, n: number, seed = 1): Uint8Array {
  const g = new GraphBuilder();
  const rng = new SeededRandom(seed);
  const x = g.input("x", "float32", ["m", k]);
  const w = g.weight("w", [k, n], Float32Array.from({ length: k * n }, () => rng.normal() * 0.05));
  g.op("MatMul", [x, w], {}, { outputs: ["y"] });
  g.output("y", "y", "float32", ["m", n]);
  return encodeInline(g, { graphName: "matmul" });
}

/** GFLOP/s of ONNX Runtime's MatMul at [m, k] x [k, n], running for at least `minMs` per repeat. */
export async function measureOrtMatmul(m: number, k: number, n: number, options: { minMs: number; repeats: number }): Promise<Measured> {
  const { session } = await openOrtSession(matmulModel(k, n), { executionProvider: "cpu" });
  try {
    const rng = new SeededRandom(2);
    const feeds = { x: new ort.Tensor("float32", Float32Array.from({ length: m * k }, () => rng.normal()), [m, k]) };
    await session.run(feeds);
    return await runRate(session, feeds, 2 * m * k * n, "GFLOP/s", options);
  } finally {
    await session.release();
  }
}

/** The model configs of a recipe without generating the models (FLOPs need only the shape). */
function recipeConfigs(recipe: PairRecipe) {
  const source = recipe.source;
  if (source.kind === "random") return { expert: parseModelConfig(source.expert), amateur: parseModelConfig(source.amateur) };
  const read = (dir: string) => {
    const path = join(REPO_ROOT, dir, "config.json");
    return parseModelConfig(JSON.parse(readFileSync(path, "utf8")), path);
  };
  return { expert: read(source.expertDir), amateur: read(source.amateurDir) };
}

function meanWorldPromptTokens(workload: PairWorkload, cacheDir: string): number {
  if (workload.recipe.source.kind !== "dirs") throw new BenchInputError("prompts", `"world" prompts need a pair given as directories (${workload.recipe.name})`);
  const prompts = worldPrompts(ensureWorld(cacheDir), join(REPO_ROOT, workload.recipe.source.expertDir), Math.max(...workload.streams));
  return prompts.reduce((n, p) => n + p.length, 0) / prompts.length;
}

export const LIMITS_HOW =
  "float32 MatMul graphs built with the project's ONNX graph builder, run by onnxruntime-node on the CPU provider with its default threads; " +
  "PyTorch (torch.matmul, threads = the process's cores) and numpy (x @ w) on the same shapes in bench/peers/matmul.py; the ceiling is the best median of all three; " +
  "FLOPs per token = 2 x (linear weights + LM head) + 4 x layers x heads x head_dim x context, expert + amateur; " +
  "memory read: a float32 array far larger than the caches summed by a ReduceSum graph (onnxruntime-node, fed without a copy), PyTorch (every core) and numpy (one thread) in bench/peers/memory_read.py; the read peak is the best median of the three";

/** The fastest a step could run here: its bytes at the read peak or its FLOPs at the MatMul peak, whichever takes longer. */
export interface Roofline {
  seconds: number;
  boundBy: "memory" | "compute";
}

export function roofline(step: { flops: number; bytes: number }, peakGflops: number, peakReadGBs: number): Roofline {
  const compute = step.flops / (peakGflops * 1e9);
  const memory = step.bytes / (peakReadGBs * 1e9);
  return memory >= compute ? { seconds: memory, boundBy: "memory" } : { seconds: compute, boundBy: "compute" };
}

/** The ceiling in tokens/s of a pair at a mean context, from a peak rate. */
export function pairCeiling(pair: string, expert: ModelConfig, amateur: ModelConfig, context: number, peakGflops: number): PairCeiling {
  const e = flopsPerToken(expert, context);
  const a = flopsPerToken(amateur, context);
  const total = e.total + a.total;
  return { pair, context, expert: e, amateur: a, flopsPerToken: total, ceilingTokensPerSecond: (peakGflops * 1e9) / total };
}

export async function runLimits(settings: BenchSettings, log: (line: string) => void, cpuModel: string): Promise<LimitsResult> {
  const matmul: MatmulRate[] = [];
  for (const [m, k, n] of settings.limits.shapes) {
    const gflops = await measureOrtMatmul(m, k, n, settings.limits);
    matmul.push({ m, k, n, gflops });
    log(`  ONNX Runtime MatMul [${m}x${k}]x[${k}x${n}]: ${gflops.median.toFixed(1)} GFLOP/s`);
  }
  const peers: PeerMatmul[] = [];
  for (const library of ["torch", "numpy"] as const) {
    const peer = await measurePeerMatmul(library, settings.limits.shapes, settings.limits);
    peers.push(peer);
    if (!peer.available) log(`  ${library}: not measured, ${peer.missing} is missing (${peer.install})`);
    else for (const r of peer.matmul) log(`  ${library} ${peer.version} (${peer.blas}) MatMul [${r.m}x${r.k}]x[${r.k}x${r.n}]: ${r.gflops.median.toFixed(1)} GFLOP/s`);
  }
  const peak = peakOf(matmul, peers);
  const peakGflops = peak.gflops;
  const pairs = settings.sampling.pairs.map((workload) => {
    const { expert, amateur } = recipeConfigs(workload.recipe);
    const prompt = workload.prompts === "world" ? meanWorldPromptTokens(workload, settings.cacheDir) : workload.prompts;
    return pairCeiling(workload.name, expert, amateur, meanContext(prompt, workload.newTokens), peakGflops);
  });
  const onnxruntimePeakGflops = Math.max(...matmul.map((r) => r.gflops.median));
  const { readBytes } = settings.limits;
  const memoryRead = await measureOrtRead(readBytes, settings.limits);
  log(`  ONNX Runtime memory read (${(readBytes / 2 ** 20).toFixed(0)} MiB): ${memoryRead.median.toFixed(1)} GB/s`);
  for (const peer of peers) {
    if (peer.memoryRead) log(`  ${peer.library} memory read: ${peer.memoryRead.median.toFixed(1)} GB/s`);
    else if (peer.memoryReadFailure) log(`  ${peer.library} memory read: not measured (${peer.memoryReadFailure})`);
  }
  const peakRead = peakReadOf(memoryRead, peers);
  return { how: LIMITS_HOW, cpuModel, matmul, peers, peakGflops, peakBy: peak.by, onnxruntimePeakGflops, memoryRead, readBytes, peakReadGBs: peakRead.gbPerSecond, peakReadBy: peakRead.by, pairs };
}
