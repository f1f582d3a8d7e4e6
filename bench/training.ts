// Section "training": the trainer's two loops on the built-in expert's shape, each in its own
// child process (`lightreasoner bench-worker lora|pretrain`) so its peak memory is its own:
// LoRA fine-tuning (LightReasoner's soft-label KL at selected steps) in samples per second on
// synthetic selected steps over the built-in world's real trajectories, and full-parameter
// pretraining in tokens per second. Each optimizer step after the warm-up is one repeat; the
// FLOPs those steps did, over the tfjs backend's own matMul rate, is the fraction reached.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { loadModelDir } from "#core/formats/model-dir.ts";
import { TextTokenizer } from "#core/formats/tokenizer.ts";
import { SeededRandom } from "#core/math/random.ts";
import type { ModelConfig } from "#core/model/config.ts";
import { parseModelConfig } from "#core/model/config.ts";
import { parameterCount } from "#core/model/init-model.ts";
import { measureMatmulGflops } from "#trainer/model/backend.ts";
import { trainLora } from "#trainer/training/lora-trainer.ts";
import { pretrain } from "#trainer/training/pretrain.ts";
import { readChatSequences } from "#trainer/training/pretrain-data.ts";
import type { StepEvent } from "#trainer/training/training-loop.ts";
import type { Trajectory, TrajectoryTarget } from "#trainer/training/trajectory.ts";
import { flopsPerToken } from "./flops.ts";
import type { ProcessMemory } from "#core/metrics/process-memory.ts";
import { runWorker } from "./processes.ts";
import type { BenchSettings } from "./settings.ts";
import type { Measured } from "./stats.ts";
import { measured, median } from "./stats.ts";
import { REPO_ROOT } from "./paths.ts";
import { ensureWorld } from "./workloads.ts";

/** The expert LoRA is trained on, and the shape pretraining starts from. */
export const TRAINING_MODEL_DIR = join(REPO_ROOT, "models", "expert");

export interface TrainingRun {
  what: string;
  backend: string;
  parameters: number;
  /** Samples per optimizer step (LoRA: selected steps; pretraining: sequences). */
  samplesPerStep: number;
  tokensPerStep: number;
  samplesPerSecond: Measured;
  tokensPerSecond: Measured;
  /** Estimated FLOPs of the measured steps over their seconds (see TRAINING_HOW). */
  achievedGflops: Measured;
  /** The backend's float32 matMul rate (measureMatmulGflops) in the same process. */
  backendMatmulGflops: number;
  /** achievedGflops over backendMatmulGflops (medians). */
  fractionOfMatmul: number;
  /** Peak resident memory of the training process. */
  memory: ProcessMemory;
}

export interface TrainingResult {
  how: string;
  lora: TrainingRun;
  pretrain: TrainingRun;
}

export const TRAINING_HOW =
  "child processes on the best tfjs backend available; one repeat = one optimizer step after the warm-up; FLOPs per step = " +
  "tokens x (linear + attention) + labelled positions x LM head, times 2 for LoRA (forward + input gradients, frozen weights) " +
  "and 3 for pretraining (+ weight gradients); backend rate = measureMatmulGflops on square float32 matrices";

export interface TrainingWorkerInput {
  warmupSteps: number;
  steps: number;
  matmulSize: number;
  cacheDir: string;
}

/** What a worker measured, before the parent adds the process's memory. */
type WorkerRun = Omit<TrainingRun, "memory">;

/**
 * Trajectories as the sampler produces them, from the world's real problems: the chat prompt
 * and worked answer in the expert's tokens, with about one completion position in seven
 * selected and a soft label over the true next token and up to two others.
 */
export function syntheticSelectedSteps(sequences: readonly Trajectory[], vocabSize: number, seed: number): Trajectory[] {
  const rng = new SeededRandom(seed);
  return sequences.map((t) => {
    const targets: TrajectoryTarget[] = [];
    for (let p = t.promptLength + 1; p < t.tokenIds.length; p++) {
      if (rng.next() >= 0.15) continue;
      const ids = [t.tokenIds[p]];
      const extra = rng.int(3);
      while (ids.length < 1 + extra) {
        const id = rng.int(vocabSize);
        if (!ids.includes(id)) ids.push(id);
      }
      const raw = ids.map((_, j) => (j === 0 ? 2 : 0.2 + rng.next()));
      const sum = raw.reduce((a, b) => a + b, 0);
      targets.push({ position: p, ids, weights: raw.map((w) => w / sum) });
    }
    return { ...t, targets };
  });
}

function meanLength(sequences: readonly Trajectory[]): number {
  return sequences.reduce((n, t) => n + t.tokenIds.length, 0) / sequences.length;
}

/** Per-step figures of the measured steps (after the warm-up). */
function summarize(events: StepEvent[], config: ModelConfig, context: number, backwardFactor: number, what: string, backend: string, matmul: number): WorkerRun {
  const flops = flopsPerToken(config, context);
  const stepFlops = (e: StepEvent) => backwardFactor * (e.tokens * (flops.linear + flops.attention) + e.tunedTokens * flops.lmHead);
  const achieved = measured(events.map((e) => stepFlops(e) / e.stepSeconds / 1e9), "GFLOP/s");
  return {
    what,
    backend,
    parameters: parameterCount(config),
    samplesPerStep: median(events.map((e) => e.samples)),
    tokensPerStep: median(events.map((e) => e.tokens)),
    samplesPerSecond: measured(events.map((e) => e.samples / e.stepSeconds), "samples/s"),
    tokensPerSecond: measured(events.map((e) => e.tokens / e.stepSeconds), "tokens/s"),
    achievedGflops: achieved,
    backendMatmulGflops: matmul,
    fractionOfMatmul: achieved.median / matmul,
  };
}

/** Worker: LoRA on the built-in expert with the reference's settings (rank 8, q/v, batch 8 x 2). */
export async function loraWorker(input: TrainingWorkerInput): Promise<WorkerRun> {
  const { config, weights } = loadModelDir(TRAINING_MODEL_DIR);
  const world = ensureWorld(input.cacheDir);
  const tokenizer = TextTokenizer.load(TRAINING_MODEL_DIR);
  const sequences = readChatSequences(world.train, tokenizer, { seqLen: config.maxPositionEmbeddings }).sequences.slice(0, 400);
  const trajectories = syntheticSelectedSteps(sequences, config.vocabSize, 9);
  const events: StepEvent[] = [];
  const result = await trainLora({
    expert: { config, weights, source: TRAINING_MODEL_DIR },
    trajectories,
    config: { maxSteps: input.warmupSteps + input.steps, checkpointEverySteps: 0, pushEverySteps: 0, learningRate: 1e-4 },
    onStep: (e) => {
      if (e.step > input.warmupSteps) events.push(e);
    },
  });
  const matmul = measureMatmulGflops({ size: input.matmulSize });
  return summarize(events, config, meanLength(sequences) / 2, 2, `LoRA rank ${result.config.lora.rank} on ${result.config.lora.targetModules.join("+")}, ${result.config.batchSize} x ${result.config.gradientAccumulation} selected steps per optimizer step`, result.backend.kind, matmul);
}

/** Worker: pretraining the built-in expert's shape from scratch on the world's problems. */
export async function pretrainWorker(input: TrainingWorkerInput): Promise<WorkerRun> {
  const configJson = JSON.parse(readFileSync(resolve(TRAINING_MODEL_DIR, "config.json"), "utf8")) as Record<string, unknown>;
  const world = ensureWorld(input.cacheDir);
  const tokenizer = TextTokenizer.load(world.tokenizerDir);
  const data = readChatSequences(world.train, tokenizer, { seqLen: 256 });
  const out = mkdtempSync(join(tmpdir(), "lightreasoner-bench-pretrain-"));
  const events: StepEvent[] = [];
  try {
    const result = await pretrain({
      start: { configJson },
      sequences: data.sequences,
      tokenizerDir: world.tokenizerDir,
      outDir: out,
      config: { maxSteps: input.warmupSteps + input.steps, warmupSteps: 1, checkpointEverySteps: 0, seqLen: 256 },
      onStep: (e) => {
        if (e.step > input.warmupSteps) events.push(e);
      },
    });
    const matmul = measureMatmulGflops({ size: input.matmulSize });
    const config = parseModelConfig(configJson);
    return summarize(events, config, meanLength(data.sequences) / 2, 3, `pretraining every weight, ${result.config.batchSize} sequences per step`, result.backend?.kind ?? tf.getBackend(), matmul);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

export async function runTraining(settings: BenchSettings, log: (line: string) => void): Promise<TrainingResult> {
  const t = settings.training;
  const cacheDir = resolve(settings.cacheDir);
  ensureWorld(cacheDir);
  const lora = await runWorker<WorkerRun>("lora", { warmupSteps: t.loraWarmupSteps, steps: t.loraSteps, matmulSize: t.matmulSize, cacheDir }, 600_000);
  log(`  LoRA: ${lora.result.samplesPerSecond.median.toFixed(1)} samples/s on ${lora.result.backend}`);
  const pre = await runWorker<WorkerRun>("pretrain", { warmupSteps: t.pretrainWarmupSteps, steps: t.pretrainSteps, matmulSize: t.matmulSize, cacheDir }, 600_000);
  log(`  pretraining: ${pre.result.tokensPerSecond.median.toFixed(0)} tokens/s on ${pre.result.backend}`);
  return { how: TRAINING_HOW, lora: { ...lora.result, memory: lora.memory }, pretrain: { ...pre.result, memory: pre.memory } };
}
