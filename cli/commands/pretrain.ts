// `lightreasoner pretrain`: full-parameter pretraining of a llama/qwen2 model on problems with
// worked answers (GSM8K-layout JSON lines) rendered through the tokenizer's chat template.
// How the built-in expert and amateur are made. A long run is split into pieces with
// --max-minutes or --stop-after: each piece ends at a checkpoint, and the same command
// continues it; Ctrl-C also stops at a checkpoint.
import type { Command } from "commander";
import { InvalidArgumentError, Option } from "commander";
import { readFileSync } from "node:fs";
import { TextTokenizer } from "#core/formats/tokenizer.ts";
import { ModelFormatError } from "#core/model/errors.ts";
import type { BackendKind } from "#trainer/model/backend.ts";
import { BACKEND_KINDS } from "#trainer/model/backend.ts";
import { TrainingConfigError } from "#trainer/training/errors.ts";
import { pretrain } from "#trainer/training/pretrain.ts";
import { readChatSequences } from "#trainer/training/pretrain-data.ts";
import { SCHEDULE_KINDS } from "#trainer/training/schedule.ts";
import { DEFAULT_PRETRAIN_CONFIG, resolvePretrainConfig } from "#trainer/training/training-config.ts";
import type { StepEvent } from "#trainer/training/training-loop.ts";
import { parseIntegerOption, parseNumberOption } from "#cli/options.ts";

interface PretrainFlags {
  config?: string;
  from?: string;
  data: string;
  tokenizer: string;
  out: string;
  steps?: number;
  scheduleSteps?: number;
  stopAfter?: number;
  maxMinutes?: number;
  batchSize?: number;
  gradAccum?: number;
  seqLen?: number;
  lr?: number;
  warmup?: number;
  schedule?: (typeof SCHEDULE_KINDS)[number];
  minLrRatio?: number;
  weightDecay?: number;
  seed?: number;
  completionOnly?: boolean;
  systemPrompt?: string;
  checkpointEvery?: number;
  checkpointDir?: string;
  keepCheckpoints?: boolean;
  logEvery: number;
  backend?: string;
}

const D = DEFAULT_PRETRAIN_CONFIG;

function positive(flag: string, parse: (v: string) => number) {
  return (value: string) => {
    const n = parse(value);
    if (!(n > 0)) throw new InvalidArgumentError(`${flag} must be > 0, got "${value}"`);
    return n;
  };
}

export function registerPretrain(program: Command): void {
  program
    .command("pretrain")
    .description(
      "pretrain every weight of a llama/qwen2 model on question + worked-answer pairs (GSM8K-layout JSON lines), " +
        "rendered as chat sequences with the tokenizer's template; writes a complete model directory. " +
        "Long runs go in pieces: --max-minutes or --stop-after end a piece at a checkpoint, and the same command continues it.",
    )
    .option("--config <file>", "config.json of the model to create (model_type llama or qwen2 and its shape); weights start random from --seed")
    .option("--from <model-dir>", "continue from this model directory's weights instead of a random start (--config not needed)")
    .requiredOption("--data <file>", "training problems, one JSON object per line with \"question\" and \"answer\" (worked solution ending \"#### N\")")
    .requiredOption("--tokenizer <dir>", "directory with tokenizer.json and tokenizer_config.json (chat template); copied into --out")
    .requiredOption("--out <dir>", "model directory to write (config.json, model.safetensors, tokenizer, pretrain_log.json); checkpoints go in <out>/checkpoints")
    .option("--steps <n>", `optimizer steps of the whole run; the schedule ends here (default ${D.maxSteps})`, positive("--steps", parseIntegerOption("--steps")))
    .option("--schedule-steps <n>", "let the learning-rate schedule span this many steps (>= --steps): the run ends part way down the decay", positive("--schedule-steps", parseIntegerOption("--schedule-steps")))
    .option("--stop-after <n>", "take at most this many steps in this invocation, then checkpoint and exit", positive("--stop-after", parseIntegerOption("--stop-after")))
    .option("--max-minutes <m>", "stop this invocation at the first step boundary after this many minutes, then checkpoint and exit", positive("--max-minutes", parseNumberOption("--max-minutes")))
    .option("--batch-size <n>", `sequences per micro-batch (default ${D.batchSize})`, parseIntegerOption("--batch-size"))
    .option("--grad-accum <n>", `micro-batches per optimizer step (default ${D.gradientAccumulation})`, parseIntegerOption("--grad-accum"))
    .option("--seq-len <n>", `cut sequences longer than this many tokens (default ${D.seqLen})`, parseIntegerOption("--seq-len"))
    .option("--lr <rate>", `peak learning rate (default ${D.learningRate})`, parseNumberOption("--lr"))
    .option("--warmup <n>", `steps of linear warm-up (default ${D.warmupSteps})`, parseIntegerOption("--warmup"))
    .addOption(new Option("--schedule <kind>", `learning rate after warm-up (default ${D.schedule})`).choices(SCHEDULE_KINDS))
    .option("--min-lr-ratio <r>", `where the decay ends, as a fraction of the peak (default ${D.minLearningRateRatio})`, parseNumberOption("--min-lr-ratio"))
    .option("--weight-decay <wd>", `AdamW weight decay on matrices (default ${D.weightDecay})`, parseNumberOption("--weight-decay"))
    .option("--seed <n>", `seed of the initial weights and the data order (default ${D.seed})`, parseIntegerOption("--seed"))
    .option("--completion-only", "put the loss only on the answer, not on the system prompt and question")
    .option("--system-prompt <text>", "system turn of every sequence (default \"Please reason step by step.\"; \"\" for none)")
    .option("--checkpoint-every <n>", `checkpoint (and rewrite --out) every this many steps (default ${D.checkpointEverySteps})`, parseIntegerOption("--checkpoint-every"))
    .option("--checkpoint-dir <dir>", "where checkpoints go (default <out>/checkpoints; removed when the run finishes)")
    .option("--keep-checkpoints", "keep the checkpoint directory after the run finishes")
    .option("--log-every <n>", "print a progress line every this many steps", positive("--log-every", parseIntegerOption("--log-every")), 10)
    .addOption(new Option("--backend <kind>", "TensorFlow.js backend (default: LR_TFJS_BACKEND, else the best available)").choices(["auto", ...BACKEND_KINDS]))
    .action(async (flags: PretrainFlags) => {
      if ((flags.config === undefined) === (flags.from === undefined)) {
        throw new TrainingConfigError("--config, --from", "give exactly one: --config for a fresh model, --from to continue an existing model directory");
      }
      const config = resolvePretrainConfig({
        maxSteps: flags.steps,
        scheduleSteps: flags.scheduleSteps,
        batchSize: flags.batchSize,
        gradientAccumulation: flags.gradAccum,
        seqLen: flags.seqLen,
        learningRate: flags.lr,
        warmupSteps: flags.warmup,
        schedule: flags.schedule,
        minLearningRateRatio: flags.minLrRatio,
        weightDecay: flags.weightDecay,
        seed: flags.seed,
        completionOnly: flags.completionOnly,
        checkpointEverySteps: flags.checkpointEvery,
      });
      const tokenizer = TextTokenizer.load(flags.tokenizer);
      const data = readChatSequences(flags.data, tokenizer, { seqLen: config.seqLen, systemPrompt: flags.systemPrompt });
      console.log(`${flags.data}: ${data.sequences.length} sequences, ${data.tokens} tokens (${data.completionTokens} in answers), ${data.truncated} cut to ${config.seqLen}`);
      const controller = new AbortController();
      const onSigint = () => {
        console.log("stopping at the end of this step (Ctrl-C again to kill)...");
        controller.abort();
        process.off("SIGINT", onSigint);
      };
      process.on("SIGINT", onSigint);
      try {
        const result = await pretrain({
          start: flags.from !== undefined ? { modelDir: flags.from } : { configJson: readJsonObject(flags.config!) },
          sequences: data.sequences,
          tokenizerDir: flags.tokenizer,
          outDir: flags.out,
          checkpointDir: flags.checkpointDir,
          keepCheckpointsAtEnd: flags.keepCheckpoints,
          config,
          backend: flags.backend as BackendKind | "auto" | undefined,
          stopAfterSteps: flags.stopAfter,
          maxSeconds: flags.maxMinutes === undefined ? undefined : flags.maxMinutes * 60,
          signal: controller.signal,
          data: { file: flags.data, sequences: data.sequences.length, tokens: data.tokens, truncated: data.truncated },
          log: (line) => console.log(line),
          onStep: (e) => {
            if (e.step % flags.logEvery === 0 || e.step === e.maxSteps) console.log(progressLine(e));
          },
        });
        if (result.alreadyFinished) {
          console.log(`${flags.out} already holds this finished run (${result.progress.step} steps); nothing to do`);
          return;
        }
        const p = result.progress;
        const where = result.resumedFrom === null ? "" : ` (resumed at step ${result.resumedFrom})`;
        console.log(`${result.parameterCount.toLocaleString("en")} parameters; this invocation${where}: ${Math.round(result.tokensPerSecond).toLocaleString("en")} tokens/s, ${result.wallSeconds.toFixed(0)} s`);
        if (result.finished) {
          console.log(`finished: ${p.step} steps, ${p.tokens.toLocaleString("en")} tokens in ${p.trainSeconds.toFixed(0)} s of training; wrote ${flags.out}`);
        } else {
          console.log(`paused at step ${p.step}/${config.maxSteps} (${result.stoppedBy}); ${flags.out} holds the model so far. Run the same command to continue.`);
        }
      } finally {
        process.off("SIGINT", onSigint);
      }
    });
}

function progressLine(e: StepEvent): string {
  const tokens = Math.round(e.tokensPerSecond).toLocaleString("en");
  return `step ${e.step}/${e.maxSteps}  loss ${e.loss.toFixed(4)}  lr ${e.learningRate.toExponential(2)}  grad-norm ${e.gradNorm.toFixed(2)}  ${tokens} tok/s  epoch ${e.epoch}`;
}

function readJsonObject(file: string): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new ModelFormatError(file, `cannot read the model config: ${(err as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new ModelFormatError(file, "the model config must be a JSON object");
  return json as Record<string, unknown>;
}
