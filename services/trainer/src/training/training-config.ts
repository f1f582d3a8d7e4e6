// Every training setting, its range and its default, in one validated schema: the LoRA
// trainers (LightReasoner and the SFT baseline) and full-parameter pretraining. The gRPC
// RunConfig and the CLI flags map onto these fields; nothing else holds a default.
// LoRA defaults are the reference's (METHOD.md stage 2, via core/model/lora.ts DEFAULT_LORA);
// optimizer defaults not stated by the reference are Hugging Face Trainer's, which the
// reference scripts ran under (linear decay, no warm-up, no weight decay, clip at norm 1).
import { z } from "zod";
import { DEFAULT_LORA } from "#core/model/lora.ts";
import { LINEAR_MODULES } from "#core/model/weights.ts";
import { TrainingConfigError } from "./errors.ts";
import { SCHEDULE_KINDS } from "./schedule.ts";

const count = (min: number) => z.number().int().min(min);

export const loraSettingsSchema = z
  .object({
    rank: count(1).default(DEFAULT_LORA.rank).describe("LoRA rank r"),
    alpha: z.number().positive().default(DEFAULT_LORA.alpha).describe("LoRA scale numerator; the update is scaled by alpha / rank"),
    dropout: z.number().min(0).lt(1).default(DEFAULT_LORA.dropout).describe("dropout probability on the adapter's input while training"),
    targetModules: z
      .array(z.enum(LINEAR_MODULES))
      .min(1)
      .refine((m) => new Set(m).size === m.length, "lists a module twice")
      .default([...DEFAULT_LORA.targetModules])
      .describe("linear modules to adapt"),
  })
  .strict();

/** Settings every trainer shares, with the defaults each kind of training passes in. */
function optimizationShape(d: {
  learningRate: number;
  batchSize: number;
  gradientAccumulation: number;
  maxSteps: number;
  warmupSteps: number;
  schedule: (typeof SCHEDULE_KINDS)[number];
  minLearningRateRatio: number;
  weightDecay: number;
  adamBeta2: number;
  checkpointEverySteps: number;
  batchUnit: string;
}) {
  return {
    learningRate: z.number().positive().finite().default(d.learningRate).describe("peak learning rate"),
    batchSize: count(1).default(d.batchSize).describe(`${d.batchUnit} per micro-batch (one forward and backward pass)`),
    gradientAccumulation: count(1).default(d.gradientAccumulation).describe("micro-batches whose gradients are summed into one optimizer step"),
    maxSteps: count(1).default(d.maxSteps).describe("optimizer steps of the whole run; the schedule ends here"),
    warmupSteps: count(0).default(d.warmupSteps).describe("steps of linear warm-up to the peak learning rate; < maxSteps"),
    scheduleSteps: count(1)
      .optional()
      .describe("steps the learning-rate schedule spans when it is longer than the run (default maxSteps): the run stops part way down the decay"),
    schedule: z.enum(SCHEDULE_KINDS).default(d.schedule).describe("learning-rate shape after warm-up"),
    minLearningRateRatio: z.number().min(0).max(1).default(d.minLearningRateRatio).describe("where linear and cosine decay end, as a fraction of the peak"),
    weightDecay: z.number().min(0).default(d.weightDecay).describe("AdamW decoupled weight decay"),
    adamBeta1: z.number().min(0).lt(1).default(0.9).describe("AdamW first-moment decay"),
    adamBeta2: z.number().min(0).lt(1).default(d.adamBeta2).describe("AdamW second-moment decay"),
    adamEpsilon: z.number().positive().default(1e-8).describe("AdamW denominator epsilon"),
    maxGradNorm: z.number().min(0).default(1).describe("clip the global gradient norm to this; 0 turns clipping off"),
    checkpointEverySteps: count(0).default(d.checkpointEverySteps).describe("write a resumable checkpoint every this many optimizer steps; 0: only when a run stops"),
    keepCheckpoints: count(1).default(2).describe("checkpoints kept on disk, newest first"),
    seed: count(0).max(0xffffffff).default(0).describe("seed of every random choice: initialisation, data order, dropout"),
    shuffle: z.boolean().default(true).describe("visit the training data in a seeded random order, a new one each epoch"),
    gradientCheckpointing: z.boolean().default(false).describe("recompute each block in the backward pass: less memory, about a third more compute"),
  };
}

export const trainingConfigSchema = z
  .object({
    lora: loraSettingsSchema.prefault({}).describe("the adapter's shape"),
    ...optimizationShape({
      learningRate: 5e-5,
      batchSize: 8,
      gradientAccumulation: 2,
      maxSteps: 1000,
      warmupSteps: 0,
      schedule: "linear",
      minLearningRateRatio: 0,
      weightDecay: 0,
      adamBeta2: 0.999,
      checkpointEverySteps: 100,
      batchUnit: "samples (LightReasoner: selected steps; SFT: trajectories)",
    }),
    maxTunedTokens: count(1)
      .optional()
      .describe("stop once this many labelled positions were trained on; the step that reaches it trains on only the labels that fit (a baseline matched to another run's tuned tokens)"),
    maxWallSeconds: z
      .number()
      .positive()
      .finite()
      .optional()
      .describe("stop after the first optimizer step that ends this many wall seconds after training began, waits for data included (a baseline matched to another run's wall time)"),
    pushEverySteps: count(0).default(50).describe("hand the adapter to onAdapter (online mode: push it to the inference servers) every this many optimizer steps; 0: only at the end"),
  })
  .strict()
  .refine((c) => c.warmupSteps < c.maxSteps, { message: "must be less than maxSteps", path: ["warmupSteps"] })
  .refine((c) => c.scheduleSteps === undefined || c.scheduleSteps >= c.maxSteps, { message: "must be at least maxSteps", path: ["scheduleSteps"] });

// Pretraining defaults are nanoGPT-style (cosine to 10%, beta2 0.95, decay 0.1), with the peak
// rate and batch measured on the built-in world with 0.03M-0.75M-parameter llamas on wasm:
// 3e-3 learned faster than 1e-2; 32 sequences per batch gave no more tokens/s than 16.
export const pretrainConfigSchema = z
  .object({
    ...optimizationShape({
      learningRate: 3e-3,
      batchSize: 16,
      gradientAccumulation: 1,
      maxSteps: 2000,
      warmupSteps: 100,
      schedule: "cosine",
      minLearningRateRatio: 0.1,
      weightDecay: 0.1,
      adamBeta2: 0.95,
      checkpointEverySteps: 200,
      batchUnit: "sequences",
    }),
    seqLen: count(2).default(256).describe("longest sequence in tokens; longer ones are cut to this"),
    completionOnly: z.boolean().default(false).describe("put the loss only on the assistant's answer, not on the system prompt and question"),
  })
  .strict()
  .refine((c) => c.warmupSteps < c.maxSteps, { message: "must be less than maxSteps", path: ["warmupSteps"] })
  .refine((c) => c.scheduleSteps === undefined || c.scheduleSteps >= c.maxSteps, { message: "must be at least maxSteps", path: ["scheduleSteps"] });

export type TrainingConfig = z.output<typeof trainingConfigSchema>;
export type TrainingConfigInput = z.input<typeof trainingConfigSchema>;
export type PretrainConfig = z.output<typeof pretrainConfigSchema>;
export type PretrainConfigInput = z.input<typeof pretrainConfigSchema>;
/** The settings the shared training loop reads. */
export type OptimizationConfig = Omit<TrainingConfig, "lora" | "pushEverySteps">;

function resolve<S extends z.ZodType>(schema: S, input: unknown, prefix: string): z.output<S> {
  // undefined means "not set" (a CLI flag not given), so it must not hide a default.
  const defined = typeof input === "object" && input !== null && !Array.isArray(input)
    ? Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined))
    : input;
  const parsed = schema.safeParse(defined ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const path = issue.path.join(".");
    const more = parsed.error.issues.length > 1 ? ` (and ${parsed.error.issues.length - 1} more problem(s))` : "";
    throw new TrainingConfigError(path ? `${prefix}.${path}` : prefix, `${issue.message}${more}`);
  }
  return parsed.data;
}

/** The LoRA training settings with every unset field at its default; a bad field throws TrainingConfigError naming it. */
export function resolveTrainingConfig(input: TrainingConfigInput | unknown = {}, prefix = "training"): TrainingConfig {
  return resolve(trainingConfigSchema, input, prefix);
}

/** The pretraining settings with every unset field at its default. */
export function resolvePretrainConfig(input: PretrainConfigInput | unknown = {}, prefix = "pretrain"): PretrainConfig {
  return resolve(pretrainConfigSchema, input, prefix);
}

export const DEFAULT_TRAINING_CONFIG: Readonly<TrainingConfig> = Object.freeze(resolveTrainingConfig());
export const DEFAULT_PRETRAIN_CONFIG: Readonly<PretrainConfig> = Object.freeze(resolvePretrainConfig());
