// The one optimizer loop every trainer runs (LightReasoner's KL on selected steps, the SFT
// baseline, full-parameter pretraining): gather `gradientAccumulation` micro-batches, one
// forward over each micro-batch's trajectories giving the logits at all its labelled
// positions at once, the soft-label loss, summed gradients, optional clipping to a global
// norm, an AdamW update at the scheduled rate; then events, checkpoints and periodic hooks.
// What is trained (LoRA pairs or every weight) and how a checkpoint is written are the
// caller's; the loop keeps the counters that make a resumed run continue exactly.
import * as tf from "@tensorflow/tfjs";
import type { SelectedPosition } from "#trainer/model/transformer.ts";
import type { AdamW, NamedVariable } from "./adamw.ts";
import type { DataCursor, MicroBatch } from "./batching.ts";
import type { GradientEngine } from "./gradient-engine.ts";
import type { LearningRateSchedule } from "./schedule.ts";
import { learningRateAt } from "./schedule.ts";
import { cutToBudget } from "./token-budget.ts";
import type { OptimizationConfig } from "./training-config.ts";
import type { SoftLabel } from "./trajectory.ts";

/** Counters that, with the trained weights and the optimizer state, define where a run is. */
export interface LoopProgress {
  /** Optimizer steps taken. */
  step: number;
  /** Where the next micro-batch starts. */
  cursor: DataCursor;
  /** Training forward passes run; LoRA dropout masks are drawn per pass, so a resume replays from here. */
  forwardPasses: number;
  /** Samples trained on, in the objective's unit. */
  samples: number;
  /** Labelled positions trained on (the paper's "tuned tokens"). */
  tunedTokens: number;
  /** Tokens run through the model's forward pass, padding excluded. */
  tokens: number;
  /** Seconds spent in optimizer steps, over every piece of the run. */
  trainSeconds: number;
  /** Wall seconds of the loop, waits for data included, over every piece (absent in checkpoints written before it was counted: 0). */
  wallSeconds?: number;
}

export const freshProgress = (): LoopProgress => ({
  step: 0,
  cursor: { epoch: 0, index: 0, targetOffset: 0 },
  forwardPasses: 0,
  samples: 0,
  tunedTokens: 0,
  tokens: 0,
  trainSeconds: 0,
  wallSeconds: 0,
});

/** One optimizer step, as reported to onStep. */
export interface StepEvent {
  /** 1-based number of the step just taken. */
  step: number;
  maxSteps: number;
  /** The loss that was minimised: mean over the step's micro-batches of each one's mean over labelled positions. */
  loss: number;
  learningRate: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  clipped: boolean;
  /** Samples in the objective's unit (selected steps, or trajectories). */
  samples: number;
  /** Labelled positions trained on. */
  tunedTokens: number;
  /** Tokens run forward, padding excluded. */
  tokens: number;
  /** Forward, backward and update; waiting for data excluded. */
  stepSeconds: number;
  /** Waiting for this step's data (online mode: for trajectories to arrive). */
  waitSeconds: number;
  samplesPerSecond: number;
  tokensPerSecond: number;
  epoch: number;
  totals: Pick<LoopProgress, "samples" | "tunedTokens" | "tokens" | "trainSeconds">;
}

export type StopReason =
  /** The run reached maxSteps. */
  | "max-steps"
  /** A stream of trajectories ended. */
  | "data-exhausted"
  /** This piece's step limit (stopAfterSteps). */
  | "step-limit"
  /** This piece's time limit. */
  | "time-limit"
  /** The caller's AbortSignal fired. */
  | "aborted"
  /** The run trained on config.maxTunedTokens labelled positions. */
  | "token-budget"
  /** The run's wall time reached config.maxWallSeconds. */
  | "time-budget";

/** Whether a run ended for good (as opposed to pausing at a checkpoint). */
export const isFinished = (reason: StopReason) => reason === "max-steps" || reason === "data-exhausted" || reason === "token-budget" || reason === "time-budget";

/** The budget a run has already spent, if any: a resumed run that reached one is finished. */
function budgetReached(config: OptimizationConfig, progress: LoopProgress): StopReason | null {
  if (config.maxTunedTokens && progress.tunedTokens >= config.maxTunedTokens) return "token-budget";
  if (config.maxWallSeconds && (progress.wallSeconds ?? 0) >= config.maxWallSeconds) return "time-budget";
  return null;
}

export interface PieceLimits {
  /** Take at most this many steps in this call. */
  stopAfterSteps?: number;
  /** Stop after the first step that ends past this many seconds from the start of this call. */
  maxSeconds?: number;
  signal?: AbortSignal;
}

export interface LoopOptions {
  /** Computes each micro-batch's loss and the gradients of `params`, in order. */
  engine: GradientEngine;
  params: readonly NamedVariable[];
  optimizer: AdamW;
  config: OptimizationConfig;
  batches: AsyncIterator<MicroBatch>;
  /** Updated in place as steps are taken. */
  progress: LoopProgress;
  limits?: PieceLimits;
  onStep?: (event: StepEvent) => void | Promise<void>;
  /** Writes a checkpoint of the current state; called every checkpointEverySteps and when the loop stops. */
  checkpoint?: (progress: LoopProgress) => void | Promise<void>;
  /** Called every `every` steps and once when the run finishes (online mode pushes adapters here). */
  periodic?: { every: number; run: (step: number) => void | Promise<void> };
}

export function scheduleOf(config: OptimizationConfig): LearningRateSchedule {
  return {
    kind: config.schedule,
    peak: config.learningRate,
    totalSteps: config.scheduleSteps ?? config.maxSteps,
    warmupSteps: config.warmupSteps,
    minRatio: config.minLearningRateRatio,
  };
}

/** Runs optimizer steps until the run ends or this piece's limits stop it. */
export async function runTrainingLoop(o: LoopOptions): Promise<StopReason> {
  const { config, progress } = o;
  const schedule = scheduleOf(config);
  const started = performance.now();
  const startStep = progress.step;
  let lastCheckpoint = progress.step;
  let lastPeriodic = -1;
  const wallBefore = progress.wallSeconds ?? 0;
  let reason: StopReason | null = progress.step >= config.maxSteps ? "max-steps" : budgetReached(config, progress);
  while (reason === null) {
    // A step is one long synchronous computation and an in-memory data source resolves in
    // microtasks, so without this the event loop would never run between steps: no signal
    // handler (Ctrl-C), timer or gRPC call would get through until the run ended.
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (o.limits?.signal?.aborted) {
      reason = "aborted";
      break;
    }
    const waitStart = performance.now();
    let micro: MicroBatch[] = [];
    while (micro.length < config.gradientAccumulation) {
      const next = await o.batches.next();
      if (next.done) break;
      micro.push(next.value);
    }
    if (micro.length === 0) {
      reason = "data-exhausted";
      break;
    }
    const full = micro.length === config.gradientAccumulation;
    if (config.maxTunedTokens) micro = cutToBudget(micro, config.maxTunedTokens - progress.tunedTokens);
    const stepStart = performance.now();
    const learningRate = learningRateAt(schedule, progress.step);
    const step = await takeStep(o, micro, learningRate);
    const stepSeconds = (performance.now() - stepStart) / 1000;
    progress.trainSeconds += stepSeconds;
    progress.wallSeconds = wallBefore + (performance.now() - started) / 1000;
    await o.onStep?.({
      ...step,
      step: progress.step,
      maxSteps: config.maxSteps,
      learningRate,
      stepSeconds,
      waitSeconds: (stepStart - waitStart) / 1000,
      samplesPerSecond: step.samples / stepSeconds,
      tokensPerSecond: step.tokens / stepSeconds,
      epoch: progress.cursor.epoch,
      totals: { samples: progress.samples, tunedTokens: progress.tunedTokens, tokens: progress.tokens, trainSeconds: progress.trainSeconds },
    });

    if (progress.step >= config.maxSteps) reason = "max-steps";
    else if (budgetReached(config, progress)) reason = budgetReached(config, progress);
    else if (!full) reason = "data-exhausted";
    else if (o.limits?.stopAfterSteps !== undefined && progress.step - startStep >= o.limits.stopAfterSteps) reason = "step-limit";
    else if (o.limits?.maxSeconds !== undefined && (performance.now() - started) / 1000 >= o.limits.maxSeconds) reason = "time-limit";
    else if (o.limits?.signal?.aborted) reason = "aborted";

    if (o.periodic && o.periodic.every > 0 && progress.step % o.periodic.every === 0) {
      await o.periodic.run(progress.step);
      lastPeriodic = progress.step;
    }
    if (o.checkpoint && config.checkpointEverySteps > 0 && progress.step % config.checkpointEverySteps === 0 && reason === null) {
      await o.checkpoint(progress);
      lastCheckpoint = progress.step;
    }
  }
  if (o.periodic && isFinished(reason) && lastPeriodic !== progress.step) await o.periodic.run(progress.step);
  if (o.checkpoint && lastCheckpoint !== progress.step) await o.checkpoint(progress);
  return reason;
}

type StepResult = Pick<StepEvent, "loss" | "gradNorm" | "clipped" | "samples" | "tunedTokens" | "tokens">;

/** Gradients of every micro-batch, summed, clipped, applied; progress advanced. */
async function takeStep(o: LoopOptions, micro: MicroBatch[], lr: number): Promise<StepResult> {
  const { progress } = o;
  let summed: tf.Tensor[] | null = null;
  const out: StepResult = { loss: 0, gradNorm: 0, clipped: false, samples: 0, tunedTokens: 0, tokens: 0 };
  for (const batch of micro) {
    const inputs = forwardInputs(batch);
    const { labels, realTokens } = inputs;
    // Each micro-batch's mean over its positions, divided by the micro-batch count: the
    // step minimises the mean of the micro-batch means (Hugging Face's accumulation).
    const { loss, grads: ordered } = await o.engine.lossAndGradients(inputs, labels.length * micro.length, true);
    progress.forwardPasses += 1;
    out.loss += loss;
    if (summed === null) summed = ordered;
    else {
      const previous: tf.Tensor[] = summed;
      summed = previous.map((g, i) => tf.add(g, ordered[i]));
      tf.dispose([...previous, ...ordered]);
    }
    out.samples += batch.units;
    out.tunedTokens += labels.length;
    out.tokens += realTokens;
  }
  const { config } = o;
  const grads = summed!;
  out.gradNorm = globalNorm(grads);
  out.clipped = config.maxGradNorm > 0 && out.gradNorm > config.maxGradNorm;
  // torch.nn.utils.clip_grad_norm_'s factor, epsilon included.
  const scaled = out.clipped ? tf.tidy(() => grads.map((g) => tf.mul(g, config.maxGradNorm / (out.gradNorm + 1e-6)))) : grads;
  o.optimizer.apply(scaled, lr);
  tf.dispose(grads);
  if (scaled !== grads) tf.dispose(scaled);

  progress.step += 1;
  progress.cursor = micro[micro.length - 1].cursor;
  progress.samples += out.samples;
  progress.tunedTokens += out.tunedTokens;
  progress.tokens += out.tokens;
  return out;
}

export interface ForwardInputs {
  /** Token rows, each cut after its last labelled position's context, right-padded to one length. */
  rows: number[][];
  /** [row, position - 1] per label: the logits that predict the labelled token. */
  positions: SelectedPosition[];
  labels: SoftLabel[];
  /** Real (unpadded) tokens in the rows. */
  realTokens: number;
}

/**
 * The padded batch of one micro-batch. Right padding needs no attention mask: with causal
 * attention a real token never sees the padding after it, and no label reads a padded position.
 */
export function forwardInputs(batch: MicroBatch): ForwardInputs {
  const cut = batch.chunks.map(({ trajectory, targets }) => trajectory.tokenIds.slice(0, Math.max(...targets.map((t) => t.position))));
  const width = Math.max(...cut.map((r) => r.length));
  const rows = cut.map((r) => (r.length === width ? [...r] : [...r, ...new Array<number>(width - r.length).fill(0)]));
  const positions: SelectedPosition[] = [];
  const labels: SoftLabel[] = [];
  batch.chunks.forEach(({ targets }, row) => {
    for (const t of targets) {
      positions.push([row, t.position - 1]);
      labels.push(t);
    }
  });
  return { rows, positions, labels, realTokens: cut.reduce((n, r) => n + r.length, 0) };
}

/** sqrt of the sum of squares of every gradient entry. */
export function globalNorm(grads: readonly tf.Tensor[]): number {
  const total = tf.tidy(() => tf.addN(grads.map((g) => tf.sum(tf.square(g)))));
  const value = total.dataSync()[0];
  total.dispose();
  return Math.sqrt(value);
}
