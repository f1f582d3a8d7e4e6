// Section "decode": the expert's decode rate (tokens per second of greedy steps with a KV
// cache) at several batch sizes, through the project's runner (CausalLmSession.step on
// ONNX Runtime) and through PyTorch eager (bench/peers/qwen2_torch.py: a minimal Qwen2
// forward over the same model.safetensors), on the same prompts. Before any timing, both
// compute the log-probabilities of the same few tokens (a prefill, then single steps through
// the cache), and the largest difference is reported, so the race is of the same
// computation. Log-probabilities, not logits: the served graph gives no logits, and they are
// what decoding reads.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { argmaxToken } from "#core/math/sampling.ts";
import type { CausalLmSession } from "#inference/model/session.ts";
import { openServedSession, stepInGroups } from "./engine-lockstep.ts";
import { decodeStepBytes, flopsPerToken, meanContext } from "./flops.ts";
import { preparePair } from "./models.ts";
import type { PairInfo } from "./sampling.ts";
import { pairInfo } from "./sampling.ts";
import type { BenchSettings } from "./settings.ts";
import type { Measured } from "./stats.ts";
import { measured, ratio } from "./stats.ts";
import { runPeer } from "./python-peers.ts";
import { randomPrompts } from "./workloads.ts";

export interface LogProbParity {
  /** Positions compared: the prefill's, then one per single-token step. */
  prefillTokens: number;
  decodeTokens: number;
  /** The largest |log-probability difference|. */
  maxAbsDiff: number;
  /** The largest |log-probability| seen, for scale. */
  maxAbsLogProb: number;
  /** Positions where both pick the same most likely token. */
  sameArgmax: number;
  positions: number;
}

export interface DecodeRow {
  batch: number;
  /** What one timed step of this batch costs: FLOPs and bytes read (flops.ts) at the timed steps' mean context. */
  step: { flops: number; bytes: number; context: number };
  onnxruntime: Measured;
  torch: Measured | null;
  /** ONNX Runtime over PyTorch (medians). */
  speedup: number | null;
}

export interface DecodeResult {
  how: string;
  pair: PairInfo;
  promptTokens: number;
  stepsPerRepeat: number;
  repeats: number;
  /** Null when PyTorch is not installed: then the reason, and how to install it. */
  torch: { version: string; threads: number; blas: string[]; interpreter: string } | null;
  torchMissing: { missing: string; install: string } | null;
  parity: LogProbParity | null;
  rows: DecodeRow[];
}

export const DECODE_HOW =
  "greedy decode steps after a prefill of random prompts (the first step untimed), windows of steps timed back to back from the same caches; " +
  "ONNX Runtime: CausalLmSession.step on the served graph as the service builds it (LoRA inputs at rank 0, the batch's past kept between steps, only new keys/values out; head and log-softmax at the last position only); " +
  "PyTorch eager 1.x: bench/peers/qwen2_torch.py, preallocated KV cache, logits + log_softmax + argmax each step, threads = the process's cores";

/** The largest |a - b| over two equal-length arrays of log-probability rows, with the largest |a| and the argmax agreement per row. */
export function compareLogProbs(a: Float32Array, b: Float32Array, vocab: number): { maxAbsDiff: number; maxAbsLogProb: number; sameArgmax: number; positions: number } {
  if (a.length !== b.length || a.length % vocab !== 0) throw new Error(`log-probabilities: ${a.length} and ${b.length} values do not make rows of ${vocab}`);
  let maxAbsDiff = 0;
  let maxAbsLogProb = 0;
  let sameArgmax = 0;
  const positions = a.length / vocab;
  for (let row = 0; row < positions; row++) {
    const ra = a.subarray(row * vocab, (row + 1) * vocab);
    const rb = b.subarray(row * vocab, (row + 1) * vocab);
    for (let i = 0; i < vocab; i++) {
      maxAbsDiff = Math.max(maxAbsDiff, Math.abs(ra[i] - rb[i]));
      maxAbsLogProb = Math.max(maxAbsLogProb, Math.abs(ra[i]));
    }
    if (argmaxToken(ra) === argmaxToken(rb)) sameArgmax++;
  }
  return { maxAbsDiff, maxAbsLogProb, sameArgmax, positions };
}

/** Log-probabilities after each of `tokens` from the ONNX runner: a prefill of the first `prefill`, then one token per step. */
export async function ortLogProbs(session: CausalLmSession, tokens: readonly number[], prefill: number): Promise<Float32Array> {
  const cache = session.newCache();
  const rows: Float32Array[] = [(await session.step([{ cache, tokens: tokens.slice(0, prefill), allPositions: true }]))[0].positionLogProbs!];
  for (let j = prefill; j < tokens.length; j++) rows.push((await session.step([{ cache, tokens: [tokens[j]] }]))[0].logProbs);
  const out = new Float32Array(rows.reduce((n, r) => n + r.length, 0));
  let at = 0;
  for (const r of rows) {
    out.set(r, at);
    at += r.length;
  }
  return out;
}

/** Decode tokens/s of the ONNX runner at one batch size: `repeats` windows of `steps` steps. */
export async function ortDecode(session: CausalLmSession, prompts: readonly number[][], steps: number, repeats: number, maxPrefillBatch: number): Promise<number[]> {
  const caches = prompts.map(() => session.newCache());
  let out = await stepInGroups(session, prompts.map((p, b) => ({ cache: caches[b], tokens: p })), maxPrefillBatch);
  out = await session.step(out.map((o, b) => ({ cache: caches[b], tokens: [argmaxToken(o.logProbs)] })));
  const rates: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const started = performance.now();
    for (let s = 0; s < steps; s++) out = await session.step(out.map((o, b) => ({ cache: caches[b], tokens: [argmaxToken(o.logProbs)] })));
    rates.push((prompts.length * steps) / ((performance.now() - started) / 1000));
  }
  return rates;
}

interface TorchDecodeAnswer {
  rows: { batch: number; tokensPerSecond: number[] }[];
  torch: string;
  threads: number;
  blas: string[];
}

export async function runDecode(settings: BenchSettings, log: (line: string) => void): Promise<DecodeResult> {
  const d = settings.decode;
  const prepared = await preparePair(d.recipe, settings.cacheDir, log);
  const modelDir = prepared.expert.dir;
  const vocab = prepared.expert.config.vocabSize;
  const most = Math.max(...d.batches);
  const prompts = randomPrompts(vocab, most, d.promptTokens, 37);
  const parityTokens = randomPrompts(vocab, 1, d.parity.prefillTokens + d.parity.decodeTokens, 41)[0];

  const session = await openServedSession(modelDir, "expert");
  const ortRates = new Map<number, number[]>();
  let ortParity: Float32Array;
  try {
    ortParity = await ortLogProbs(session, parityTokens, d.parity.prefillTokens);
    for (const batch of d.batches) {
      ortRates.set(batch, await ortDecode(session, prompts.slice(0, batch), d.steps, d.repeats, d.maxPrefillBatch));
      log(`  ONNX Runtime decode x${batch}: ${measured(ortRates.get(batch)!, "tokens/s").median.toFixed(1)} tokens/s`);
    }
  } finally {
    await session.release();
  }

  const dir = mkdtempSync(join(tmpdir(), "lr-decode-"));
  let parity: LogProbParity | null = null;
  let torch: DecodeResult["torch"] = null;
  let torchMissing: DecodeResult["torchMissing"] = null;
  const torchRates = new Map<number, number[]>();
  try {
    const logProbsFile = join(dir, "torch-log-probs.f32");
    const peerParity = await runPeer<{ rows: number; vocab: number }>("qwen2_torch.py", { task: "log_probs", modelDir, tokens: parityTokens, prefill: d.parity.prefillTokens, logProbsFile }, 300_000);
    if (!peerParity.ok) {
      torchMissing = { missing: peerParity.missing, install: peerParity.install };
      log(`  PyTorch: not measured, ${peerParity.missing} is missing (${peerParity.install})`);
    } else {
      const bytes = readFileSync(logProbsFile);
      const torchLogProbs = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
      parity = { prefillTokens: d.parity.prefillTokens, decodeTokens: d.parity.decodeTokens, ...compareLogProbs(ortParity, torchLogProbs, vocab) };
      log(`  log-probabilities, ONNX Runtime vs PyTorch on ${parity.positions} positions: max abs log-prob diff ${parity.maxAbsDiff.toExponential(2)} (largest |log-prob| ${parity.maxAbsLogProb.toFixed(1)}), same argmax at ${parity.sameArgmax}`);
      // Generous: a busy machine can be ten times slower than a quiet one, and a timeout loses every figure.
      const timeoutMs = 600_000 + d.batches.reduce((n, b) => n + b, 0) * (d.promptTokens + d.steps * (d.repeats + 1)) * 500;
      const peer = await runPeer<TorchDecodeAnswer>("qwen2_torch.py", { task: "decode", modelDir, prompts, batches: d.batches, steps: d.steps, repeats: d.repeats }, timeoutMs);
      if (!peer.ok) throw new Error(`PyTorch answered the log-probabilities but not the decode task: ${peer.missing} is missing`);
      torch = { version: peer.result.torch, threads: peer.result.threads, blas: peer.result.blas, interpreter: peer.interpreter };
      for (const row of peer.result.rows) {
        torchRates.set(row.batch, row.tokensPerSecond);
        log(`  PyTorch decode x${row.batch}: ${measured(row.tokensPerSecond, "tokens/s").median.toFixed(1)} tokens/s`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  // Timed steps follow the prompt and one untimed step: contexts promptTokens + 2 onwards.
  const context = meanContext(d.promptTokens + 1, d.steps * d.repeats);
  const config = prepared.expert.config;
  const rows = d.batches.map((batch) => {
    const onnxruntime = measured(ortRates.get(batch)!, "tokens/s");
    const t = torchRates.get(batch);
    const torchMeasured = t ? measured(t, "tokens/s") : null;
    const step = { flops: batch * flopsPerToken(config, context).total, bytes: decodeStepBytes(config, batch, context), context };
    return { batch, step, onnxruntime, torch: torchMeasured, speedup: torchMeasured ? ratio(onnxruntime, torchMeasured) : null };
  });
  return { how: DECODE_HOW, pair: pairInfo(prepared), promptTokens: d.promptTokens, stepsPerRepeat: d.steps, repeats: d.repeats, torch, torchMissing, parity, rows };
}
