// LoRA training at a real shape (issue 13 items 2 and 5): one micro-batch's LoRA gradients
// from one of the trainer's engines (ONNX Runtime, or TensorFlow.js where its backend can
// hold the model) against an independent float64 PyTorch computation
// (bench/peers/lora_scale_reference.py, its own Qwen2 forward reading the same safetensors), then
// the engine's training step (loss, gradients, AdamW) timed beside the same step in PyTorch
// float32. Run by scripts/lora-scale.mjs; the processes (this one, PyTorch float64, PyTorch
// float32) hold their models one after the other, so each peak resident memory is its own.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { loadModelDir } from "#core/formats/model-dir.ts";
import { SeededRandom } from "#core/math/random.ts";
import { DEFAULT_LORA } from "#core/model/lora.ts";
import { describeBackendChoice, selectBackend } from "#trainer/model/backend.ts";
import { LoraLayers } from "#trainer/model/lora.ts";
import type { ModelConfig } from "#core/model/config.ts";
import type { LoraSettings } from "#core/model/lora.ts";
import type { WeightMap } from "#core/model/weights.ts";
import type { LabelDistribution, LossAndGradients } from "#trainer/model/onnx-lora-expert.ts";
import { activationBytesPerToken, OnnxLoraExpert } from "#trainer/model/onnx-lora-expert.ts";
import type { SelectedPosition } from "#trainer/model/transformer.ts";
import { CausalLM } from "#trainer/model/transformer.ts";
import { softLabelKlLoss } from "#trainer/training/kl-loss.ts";
import { AdamW } from "#trainer/training/adamw.ts";
import { REPO_ROOT } from "./paths.ts";
import { processMemory } from "#core/metrics/process-memory.ts";

/** Largest relative gradient error accepted: max |ours - float64| / max |float64| per tensor. */
export const GRADIENT_TOLERANCE = 1e-3;

export interface LoraScaleOptions {
  expertDir: string;
  /** Which engine computes the gradients (the project's two; see gradient-engine.ts). */
  engine: "onnxruntime" | "tfjs";
  /** Rows of the micro-batch and their length in tokens. */
  rows: number;
  seq: number;
  /** Labelled positions per row (LightReasoner's selected steps). */
  labelsPerRow: number;
  /** Timed training steps of each engine (the median is reported). */
  steps: number;
  python: string;
  seed: number;
  log: (line: string) => void;
}

export interface LoraScaleResult {
  shape: { parameters: number; rows: number; seq: number; labels: number };
  gradient: { worstRelative: number; worstTensor: string; minCosine: number; loss: number; referenceLoss: number; tolerance: number; pass: boolean };
  engine: { kind: "onnxruntime" | "tfjs"; tokensPerSecond: number; stepSeconds: number[]; peakRssBytes: number; baseWeightBytes: number; activationBytes: number; loadSeconds: number };
  torch: { version: string; tokensPerSecond: number; stepSeconds: number[]; threads: number; peakRssBytes: number; float64Seconds: number };
  ratio: number;
}

const GiB = (bytes: number) => (bytes / 2 ** 30).toFixed(2);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Random rows, labelled positions in each row's second half, plausible sets of 1-16 ids. */
function batchOf(vocab: number, o: LoraScaleOptions) {
  const random = new SeededRandom(o.seed);
  const rows = Array.from({ length: o.rows }, () => Array.from({ length: o.seq }, () => random.int(vocab)));
  const positions: SelectedPosition[] = [];
  const labels: LabelDistribution[] = [];
  rows.forEach((_, b) => {
    const picked = new Set<number>();
    while (picked.size < Math.min(o.labelsPerRow, Math.ceil(o.seq / 2))) picked.add(o.seq - 1 - random.int(Math.ceil(o.seq / 2)));
    for (const t of [...picked].sort((x, y) => x - y)) {
      positions.push([b, t]);
      const ids = [...new Set(Array.from({ length: 1 + random.int(16) }, () => random.int(vocab)))];
      const raw = ids.map(() => random.next() + 0.05);
      const total = raw.reduce((x, y) => x + y, 0);
      labels.push({ ids, weights: raw.map((w) => w / total) });
    }
  });
  return { rows, positions, labels };
}

export async function runLoraScale(o: LoraScaleOptions): Promise<LoraScaleResult> {
  const backend = await selectBackend();
  o.log(`adapter and AdamW on ${describeBackendChoice(backend)}`);
  const started = performance.now();
  const { config, weights } = loadModelDir(o.expertDir);
  const baseWeightBytes = [...weights.values()].reduce((n, t) => n + 4 * t.data.length, 0);
  const parameters = baseWeightBytes / 4;
  const settings = { ...DEFAULT_LORA, targetModules: [...DEFAULT_LORA.targetModules] };
  // An adapter with B non-zero, so that every A has a gradient too.
  const fresh = LoraLayers.create(config, settings, o.seed);
  const adapter = fresh.toAdapter();
  fresh.dispose();
  const random = new SeededRandom(o.seed + 1);
  for (const { b } of adapter.pairs.values()) for (let i = 0; i < b.data.length; i++) b.data[i] = 0.02 * random.normal();
  const lora = LoraLayers.fromAdapter(config, adapter, { seed: o.seed });
  const batch = batchOf(config.vocabSize, o);
  const normaliser = batch.labels.length;
  const tokens = o.rows * o.seq;
  const side = o.engine === "onnxruntime" ? await onnxSide(config, weights, settings, lora, tokens) : tfjsSide(config, weights, lora);
  const loadSeconds = (performance.now() - started) / 1000;
  o.log(`expert ${o.expertDir}: ${(parameters / 1e6).toFixed(1)}M parameters, loaded into the ${o.engine} engine in ${loadSeconds.toFixed(1)} s; rss ${GiB(process.memoryUsage().rss)} GiB`);

  // The parity batch: dropout off, since the reference draws no masks.
  const parity = await side.step(batch, normaliser, false);
  const exchange = mkdtempSync(join(tmpdir(), "lora-scale-"));
  try {
    const pairs = lora.targets().map((name, i) => {
      const file = `pair${i}`;
      const shape = lora.shapeOf(name)!;
      const values = lora.pairValues(name);
      const grads = parity.grads.get(name)!;
      writeFileSync(join(exchange, `${file}.A.bin`), values.a);
      writeFileSync(join(exchange, `${file}.B.bin`), values.b);
      writeFileSync(join(exchange, `${file}.gradA.bin`), grads.a);
      writeFileSync(join(exchange, `${file}.gradB.bin`), grads.b);
      return { name, file, a: shape.a, b: shape.b };
    });
    writeFileSync(join(exchange, "batch.json"), JSON.stringify({ ...batch, normaliser, rank: settings.rank, alpha: settings.alpha, pairs, torchSteps: o.steps }));

    // Training steps as the trainer takes them: dropout on, gradients into AdamW.
    const params = lora.targets().flatMap((name) => {
      const [a, b] = lora.variables((n) => n === name);
      return [{ name: `${name}.A`, variable: a }, { name: `${name}.B`, variable: b }];
    });
    const optimizer = new AdamW(params, { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0 });
    const stepSeconds: number[] = [];
    for (let step = 0; step < o.steps; step++) {
      const t0 = performance.now();
      const { grads } = await side.step(batch, normaliser, true);
      const tensors = lora.targets().flatMap((name) => {
        const shape = lora.shapeOf(name)!;
        return [tf.tensor(grads.get(name)!.a, shape.a), tf.tensor(grads.get(name)!.b, shape.b)];
      });
      optimizer.apply(tensors, 1e-4);
      tf.dispose(tensors);
      stepSeconds.push((performance.now() - t0) / 1000);
      o.log(`${o.engine} step ${step + 1}/${o.steps}: ${stepSeconds[step].toFixed(1)} s, ${(tokens / stepSeconds[step]).toFixed(1)} tokens/s, rss ${GiB(process.memoryUsage().rss)} GiB`);
    }
    optimizer.dispose();
    // VmHWM, not getrusage's maxRSS: Linux starts a child's maxRSS at its parent's resident set
    // when it forked, and a full bench run's process held 3.3 GiB by then: that was the figure.
    const peakRssBytes = processMemory(process.pid).peakRssBytes;
    await side.dispose();
    lora.dispose();

    const python = (part: "float64" | "float32") => {
      o.log(`PyTorch ${part} (${o.python} bench/peers/lora_scale_reference.py)`);
      const child = spawnSync(o.python, [join(REPO_ROOT, "bench", "peers", "lora_scale_reference.py"), exchange, o.expertDir, part], { encoding: "utf8", maxBuffer: 1 << 24 });
      if (child.status !== 0) throw new Error(`PyTorch ${part} failed (exit ${child.status}): ${(child.stderr ?? String(child.error)).trim().split("\n").slice(-3).join(" | ")}`);
      return JSON.parse(child.stdout.trim().split("\n").pop()!);
    };
    const f64 = python("float64");
    o.log(`float64 reference: loss ${f64.loss}, worst relative gradient error ${f64.worstRelative.relative} (${f64.worstRelative.name}), ${f64.seconds.toFixed(1)} s`);
    const f32 = python("float32");
    const ref = { torch: f64.torch, float64: f64, float32: f32, peakRssBytes: f32.peakRssBytes };
    const tokensPerSecond = tokens / median(stepSeconds);
    return {
      shape: { parameters, rows: o.rows, seq: o.seq, labels: batch.labels.length },
      gradient: {
        worstRelative: ref.float64.worstRelative.relative,
        worstTensor: ref.float64.worstRelative.name,
        minCosine: ref.float64.minCosine,
        loss: parity.loss,
        referenceLoss: ref.float64.loss,
        tolerance: GRADIENT_TOLERANCE,
        pass: ref.float64.worstRelative.relative <= GRADIENT_TOLERANCE,
      },
      engine: { kind: o.engine, tokensPerSecond, stepSeconds, peakRssBytes, baseWeightBytes, activationBytes: tokens * activationBytesPerToken(config, o.seq), loadSeconds },
      torch: { version: ref.torch, tokensPerSecond: ref.float32.tokensPerSecond, stepSeconds: ref.float32.stepSeconds, threads: ref.float32.threads, peakRssBytes: ref.peakRssBytes, float64Seconds: ref.float64.seconds },
      ratio: tokensPerSecond / ref.float32.tokensPerSecond,
    };
  } finally {
    rmSync(exchange, { recursive: true, force: true });
  }
}

/** The result as the lines the command prints. */
export function describeLoraScale(r: LoraScaleResult): string[] {
  const g = r.gradient;
  return [
    `shape: ${(r.shape.parameters / 1e6).toFixed(1)}M parameters, micro-batch ${r.shape.rows} x ${r.shape.seq} tokens, ${r.shape.labels} labelled positions, LoRA r${DEFAULT_LORA.rank}/alpha ${DEFAULT_LORA.alpha} on ${DEFAULT_LORA.targetModules.join("+")}`,
    `gradient parity vs float64 PyTorch: worst relative error ${g.worstRelative.toExponential(2)} (${g.worstTensor}), min cosine ${g.minCosine.toFixed(7)}, loss ${g.loss.toFixed(6)} vs ${g.referenceLoss.toFixed(6)}; tolerance ${g.tolerance}: ${g.pass ? "PASS" : "FAIL"}`,
    `${r.engine.kind} engine: ${r.engine.tokensPerSecond.toFixed(1)} tokens/s (median of ${r.engine.stepSeconds.length} steps: ${r.engine.stepSeconds.map((s) => s.toFixed(1)).join(", ")} s), peak RSS ${GiB(r.engine.peakRssBytes)} GiB (base weights ${GiB(r.engine.baseWeightBytes)} GiB, the ONNX Runtime plan's activations ${GiB(r.engine.activationBytes)} GiB; goal <= 1.3 x weights + activations = ${GiB(1.3 * r.engine.baseWeightBytes + r.engine.activationBytes)} GiB)`,
    `PyTorch ${r.torch.version} float32, ${r.torch.threads} threads: ${r.torch.tokensPerSecond.toFixed(1)} tokens/s (steps ${r.torch.stepSeconds.map((s) => s.toFixed(1)).join(", ")} s), peak RSS ${GiB(r.torch.peakRssBytes)} GiB`,
    `ratio ${r.engine.kind} / PyTorch: ${r.ratio.toFixed(2)}`,
  ];
}

interface EngineSide {
  /** Loss and gradients by adapted weight name; `training` draws dropout (and counts a pass). */
  step(batch: ReturnType<typeof batchOf>, normaliser: number, training: boolean): Promise<LossAndGradients>;
  dispose(): Promise<void>;
}

async function onnxSide(config: ModelConfig, weights: WeightMap, settings: LoraSettings, lora: LoraLayers, tokens: number): Promise<EngineSide> {
  const expert = await OnnxLoraExpert.create(config, weights, settings, { tokenBudget: tokens });
  return {
    step: (batch, normaliser, training) => expert.lossAndGradients({ ...batch, normaliser, dropoutPass: training ? lora.beginPass() : null }, lora),
    dispose: () => expert.dispose(),
  };
}

/** TensorFlow.js autodiff with block recomputation (the trainer's memory setting for long rows). */
function tfjsSide(config: ModelConfig, weights: WeightMap, lora: LoraLayers): EngineSide {
  const model = new CausalLM(config, weights, { adapter: lora, source: "expert" });
  return {
    step: async ({ rows, positions, labels }, normaliser, training) => {
      const names = lora.targets();
      const { value, grads } = tf.variableGrads(() => softLabelKlLoss(model.logitsAt(rows, undefined, positions, { training, checkpoint: true }), labels, normaliser), lora.variables());
      const out: LossAndGradients = { loss: value.dataSync()[0], grads: new Map() };
      for (const name of names) {
        const [a, b] = lora.variables((n) => n === name);
        out.grads.set(name, { a: (grads[a.name].dataSync() as Float32Array).slice(), b: (grads[b.name].dataSync() as Float32Array).slice() });
      }
      tf.dispose([value, ...Object.values(grads)]);
      return out;
    },
    dispose: async () => model.dispose(),
  };
}

export function defaultExpertDir(): string {
  return resolve(REPO_ROOT, ".cache/bench/qwen2.5-0.5b-shape/expert");
}
