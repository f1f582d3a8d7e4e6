// Full-parameter pretraining of a llama / qwen2 model on token sequences: how the project
// makes its own expert and amateur. Next-token cross-entropy on every real token (or only on
// the completion), AdamW with warm-up and cosine decay, batches of right-padded sequences
// grouped by length. Long jobs run in pieces (a step or time limit per call); each piece
// ends with a checkpoint (weights + optimizer + trainer state) and the next continues it
// exactly. The output directory is a complete Hugging Face model directory (config.json,
// model.safetensors, tokenizer files, generation_config.json) after every checkpoint, plus
// pretrain_log.json with the settings, throughput and loss curve.
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadModelDir, writeModelDir } from "#core/formats/model-dir.ts";
import { readSafetensors, writeSafetensors } from "#core/formats/safetensors.ts";
import { TextTokenizer } from "#core/formats/tokenizer.ts";
import type { ModelConfig } from "#core/model/config.ts";
import { parseModelConfig } from "#core/model/config.ts";
import { parameterCount, randomWeightSources } from "#core/model/init-model.ts";
import type { WeightMap } from "#core/model/weights.ts";
import { expectedWeights } from "#core/model/weights.ts";
import type { BackendChoice, BackendKind } from "#trainer/model/backend.ts";
import { describeBackendChoice, selectBackend } from "#trainer/model/backend.ts";
import { CausalLM } from "#trainer/model/transformer.ts";
import type { NamedVariable } from "./adamw.ts";
import { AdamW } from "./adamw.ts";
import { microBatches } from "./batching.ts";
import { checkResumable, latestCheckpoint, loadOptimizerState, OPTIMIZER_FILE, readTrainerState, saveOptimizerState, writeCheckpoint } from "./checkpoint.ts";
import { CheckpointError, TrainingConfigError } from "./errors.ts";
import { crossEntropyObjective } from "./objective.ts";
import type { PretrainConfig, PretrainConfigInput } from "./training-config.ts";
import { resolvePretrainConfig } from "./training-config.ts";
import type { LoopProgress, PieceLimits, StepEvent, StopReason } from "./training-loop.ts";
import { freshProgress, isFinished, runTrainingLoop } from "./training-loop.ts";
import { tfjsEngine } from "./gradient-engine.ts";
import type { Trajectory } from "./trajectory.ts";

export const PRETRAIN_LOG_FILE = "pretrain_log.json";
const WEIGHTS_FILE = "model.safetensors";
const CADENCE_FIELDS = ["checkpointEverySteps", "keepCheckpoints"];
/** Micro-batches per window that is sorted by length before batching (see batching.ts). */
const LENGTH_GROUPS = 16;
const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"];
const ARCHITECTURES = { llama: "LlamaForCausalLM", qwen2: "Qwen2ForCausalLM" } as const;

export type PretrainStart =
  /** A fresh model of this config.json shape, initialised from the run's seed. */
  | { configJson: Record<string, unknown> }
  /** Continue from an existing model directory's weights. */
  | { modelDir: string };

export interface PretrainOptions extends PieceLimits {
  start: PretrainStart;
  /** Token sequences, e.g. from readChatSequences; promptLength marks the completion. */
  sequences: readonly Trajectory[];
  /** Its tokenizer files are copied into the output and its special tokens fill config.json. */
  tokenizerDir: string;
  outDir: string;
  /** Default `<outDir>/checkpoints`; removed when the run finishes unless keepCheckpointsAtEnd. */
  checkpointDir?: string;
  keepCheckpointsAtEnd?: boolean;
  config?: PretrainConfigInput | PretrainConfig;
  backend?: BackendKind | "auto";
  /** Recorded in pretrain_log.json (e.g. the data file and its counts). */
  data?: Record<string, unknown>;
  onStep?: (event: StepEvent) => void | Promise<void>;
  log?: (line: string) => void;
}

export interface PretrainResult {
  stoppedBy: StopReason;
  finished: boolean;
  /** True when outDir already held this run, finished: nothing was trained. */
  alreadyFinished: boolean;
  progress: LoopProgress;
  resumedFrom: number | null;
  /** Tokens per second over this call's steps (forward, backward and update). */
  tokensPerSecond: number;
  wallSeconds: number;
  backend: BackendChoice | null;
  config: PretrainConfig;
  parameterCount: number;
  outDir: string;
  /** [step, loss] of every step of the run so far. */
  lossHistory: [number, number][];
}

export async function pretrain(options: PretrainOptions): Promise<PretrainResult> {
  const started = performance.now();
  const config = resolvePretrainConfig(options.config ?? {});
  const tokenizer = TextTokenizer.load(options.tokenizerDir);
  const configJson = modelConfigJson(options.start, tokenizer);
  const modelConfig = parseModelConfig(configJson, "config.json");
  const checkpointDir = options.checkpointDir ?? join(options.outDir, "checkpoints");
  const objective = crossEntropyObjective({ completionOnly: config.completionOnly });
  const identity = { kind: "full", objective: objective.name, config: config as unknown as Record<string, unknown> };
  const dataFingerprint = fingerprintSequences(options.sequences);
  const saved = latestCheckpoint(checkpointDir);
  const state = saved ? readTrainerState(saved.dir) : null;
  if (state) {
    checkResumable(state, identity, CADENCE_FIELDS, saved!.dir);
    if (JSON.stringify(state.extra?.modelConfig) !== JSON.stringify(configJson)) {
      throw new CheckpointError(saved!.dir, "was written for a model with another config.json; resume with the same --config (or --from) and --tokenizer");
    }
    if (state.extra?.dataFingerprint !== dataFingerprint) {
      throw new CheckpointError(saved!.dir, "was written while training on other data; resume with the same --data and --tokenizer");
    }
  } else {
    const done = finishedRun(options.outDir, config, dataFingerprint);
    if (done) return { ...done, config, outDir: options.outDir, wallSeconds: (performance.now() - started) / 1000 };
  }

  const backend = await selectBackend({ force: options.backend });
  options.log?.(describeBackendChoice(backend));
  const weights = saved ? readCheckpointWeights(saved.dir, modelConfig) : startWeights(options.start, modelConfig, config.seed);
  const model = new CausalLM(modelConfig, weights, { trainBase: true, source: saved?.dir ?? "pretraining start" });
  const params: NamedVariable[] = [...expectedWeights(modelConfig).keys()].map((name) => ({ name, variable: model.variablesWhere((n) => n === name)[0] }));
  const optimizer = new AdamW(params, {
    beta1: config.adamBeta1,
    beta2: config.adamBeta2,
    epsilon: config.adamEpsilon,
    weightDecay: config.weightDecay,
    // Matrices decay; norm scales and biases (1-D) do not.
    decays: (name) => expectedWeights(modelConfig).get(name)!.length >= 2,
  });
  const lossHistory: [number, number][] = state ? [...((state.extra?.lossHistory as [number, number][] | undefined) ?? [])] : [];
  let pieceTokens = 0;
  let pieceSeconds = 0;
  let outputStep = -1;
  try {
    const progress = state ? structuredClone(state.progress) : freshProgress();
    if (saved) optimizer.load(loadOptimizerState(join(saved.dir, OPTIMIZER_FILE)), join(saved.dir, OPTIMIZER_FILE));
    const batches = microBatches(options.sequences, progress.cursor, {
      objective,
      batchSize: config.batchSize,
      vocabSize: modelConfig.vocabSize,
      seed: config.seed,
      shuffle: config.shuffle,
      lengthGroups: LENGTH_GROUPS,
    });
    const shapes = new Map(params.map((p) => [p.name, p.variable.shape]));
    const log = (p: LoopProgress, finished: boolean) => ({
      format: "lightreasoner-pretrain-log-v1",
      finished,
      steps: p.step,
      config,
      parameterCount: parameterCount(modelConfig),
      tfjsBackend: backend.kind,
      data: options.data ?? null,
      dataFingerprint,
      tokens: p.tokens,
      trainSeconds: Math.round(p.trainSeconds * 10) / 10,
      tokensPerSecond: Math.round(p.tokens / Math.max(p.trainSeconds, 1e-9)),
      lossHistory,
    });
    const stoppedBy = await runTrainingLoop({
      // Every weight trains, so only autodiff serves: the ONNX Runtime graphs give LoRA gradients only.
      engine: tfjsEngine(model, params.map((p) => p.variable), config.gradientCheckpointing),
      params,
      optimizer,
      config,
      batches,
      progress,
      limits: options,
      onStep: async (e) => {
        lossHistory.push([e.step, Math.round(e.loss * 1e4) / 1e4]);
        pieceTokens += e.tokens;
        pieceSeconds += e.stepSeconds;
        await options.onStep?.(e);
      },
      checkpoint: (p) => {
        const trained = model.exportWeights();
        writeCheckpoint(checkpointDir, { ...identity, progress: p, extra: { modelConfig: configJson, dataFingerprint, lossHistory } }, (tmp) => {
          writeSafetensors(join(tmp, WEIGHTS_FILE), trained);
          saveOptimizerState(join(tmp, OPTIMIZER_FILE), optimizer.state(), shapes);
        }, config.keepCheckpoints);
        writeModelOutput(options.outDir, configJson, trained, options.tokenizerDir, tokenizer, log(p, p.step >= config.maxSteps));
        outputStep = p.step;
      },
    });
    await batches.return(undefined);
    const finished = isFinished(stoppedBy);
    if (finished) {
      if (outputStep !== progress.step) writeModelOutput(options.outDir, configJson, model.exportWeights(), options.tokenizerDir, tokenizer, log(progress, true));
      if (!options.keepCheckpointsAtEnd) rmSync(checkpointDir, { recursive: true, force: true });
    }
    return {
      stoppedBy,
      finished,
      alreadyFinished: false,
      progress,
      resumedFrom: saved?.step ?? null,
      tokensPerSecond: pieceTokens / Math.max(pieceSeconds, 1e-9),
      wallSeconds: (performance.now() - started) / 1000,
      backend,
      config,
      parameterCount: parameterCount(modelConfig),
      outDir: options.outDir,
      lossHistory,
    };
  } finally {
    optimizer.dispose();
    model.dispose();
  }
}

/**
 * config.json for the output: the given shape (or the start model's), the architecture, and
 * the tokenizer's special token ids. A vocabulary smaller than the tokenizer's, or token ids
 * that contradict it, are refused.
 */
function modelConfigJson(start: PretrainStart, tokenizer: TextTokenizer): Record<string, unknown> {
  const raw: Record<string, unknown> = "configJson" in start ? { ...start.configJson } : JSON.parse(readFileSync(join(start.modelDir, "config.json"), "utf8"));
  const source = "configJson" in start ? "config.json" : join(start.modelDir, "config.json");
  const config = parseModelConfig(raw, source);
  if (config.vocabSize < tokenizer.vocabSize) {
    throw new TrainingConfigError("vocab_size", `is ${config.vocabSize} in ${source}, but the tokenizer ${tokenizer.source} has ${tokenizer.vocabSize} tokens`);
  }
  const ids = { bos_token_id: tokenizer.bosTokenId, eos_token_id: tokenizer.eosTokenId, pad_token_id: tokenizer.padTokenId };
  const out: Record<string, unknown> = { architectures: [ARCHITECTURES[config.modelType]], ...raw };
  for (const [key, id] of Object.entries(ids)) {
    if (id === null) continue;
    const given = raw[key];
    if (given !== undefined && given !== null && given !== id && !(Array.isArray(given) && given.includes(id))) {
      throw new TrainingConfigError(key, `is ${JSON.stringify(given)} in ${source}, but the tokenizer's is ${id}`);
    }
    out[key] ??= id;
  }
  return out;
}

function startWeights(start: PretrainStart, config: ModelConfig, seed: number): WeightMap {
  if ("modelDir" in start) return loadModelDir(start.modelDir).weights;
  return new Map(randomWeightSources(config, seed).map((s) => [s.name, { shape: s.shape, data: s.data() }]));
}

function readCheckpointWeights(dir: string, config: ModelConfig): WeightMap {
  const file = join(dir, WEIGHTS_FILE);
  if (!existsSync(file)) throw new CheckpointError(file, "missing: a pretraining checkpoint holds the model's weights");
  const { tensors } = readSafetensors(file);
  const weights: WeightMap = new Map();
  for (const [name, shape] of expectedWeights(config)) {
    const t = tensors.get(name);
    if (!t || t.shape.join() !== shape.join()) throw new CheckpointError(file, `tensor ${name} is missing or not of shape [${shape.join(", ")}]`);
    weights.set(name, { shape: t.shape, data: t.data });
  }
  return weights;
}

/**
 * Writes the model directory: everything into a hidden staging directory first, then each
 * file renamed into place, so a reader never sees a half-written file.
 */
function writeModelOutput(outDir: string, configJson: Record<string, unknown>, weights: WeightMap, tokenizerDir: string, tokenizer: TextTokenizer, log: Record<string, unknown>): void {
  const staging = join(outDir, ".staging");
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  writeModelDir(staging, { configJson, weights });
  const copied = TOKENIZER_FILES.filter((name) => existsSync(join(tokenizerDir, name)));
  for (const name of copied) copyFileSync(join(tokenizerDir, name), join(staging, name));
  const generation = { bos_token_id: tokenizer.bosTokenId, eos_token_id: tokenizer.eosTokenIds.length === 1 ? tokenizer.eosTokenIds[0] : tokenizer.eosTokenIds, pad_token_id: tokenizer.padTokenId };
  writeFileSync(join(staging, "generation_config.json"), `${JSON.stringify(generation, null, 2)}\n`);
  writeFileSync(join(staging, PRETRAIN_LOG_FILE), `${JSON.stringify(log)}\n`);
  for (const name of ["config.json", WEIGHTS_FILE, ...copied, "generation_config.json", PRETRAIN_LOG_FILE]) renameSync(join(staging, name), join(outDir, name));
  rmSync(staging, { recursive: true, force: true });
}

/** sha256 of every sequence's tokens and prompt length: the data a run trained on, whatever file it came from. */
function fingerprintSequences(sequences: readonly Trajectory[]): string {
  const hash = createHash("sha256");
  for (const s of sequences) hash.update(`${s.promptLength}:${s.tokenIds.join(",")}\n`);
  return hash.digest("hex");
}

/** outDir's log when it records a finished run with these settings and data (so a repeated command is a no-op). */
function finishedRun(outDir: string, config: PretrainConfig, dataFingerprint: string): Omit<PretrainResult, "config" | "outDir" | "wallSeconds"> | null {
  const file = join(outDir, PRETRAIN_LOG_FILE);
  if (!existsSync(file)) return null;
  let log: Record<string, unknown>;
  try {
    log = JSON.parse(readFileSync(file, "utf8"));
  } catch {
    return null;
  }
  if (log.finished !== true) return null;
  if (JSON.stringify(log.config) !== JSON.stringify(config)) {
    throw new TrainingConfigError("out", `${outDir} holds a finished pretraining run with other settings (${PRETRAIN_LOG_FILE}); choose another output directory or delete it`);
  }
  if (log.dataFingerprint !== dataFingerprint) {
    throw new TrainingConfigError("out", `${outDir} holds a finished pretraining run on other data (${PRETRAIN_LOG_FILE}); choose another output directory or delete it`);
  }
  const steps = Number(log.steps);
  return {
    stoppedBy: "max-steps",
    finished: true,
    alreadyFinished: true,
    progress: { ...freshProgress(), step: steps, tokens: Number(log.tokens), trainSeconds: Number(log.trainSeconds) },
    resumedFrom: null,
    tokensPerSecond: Number(log.tokensPerSecond),
    backend: null,
    parameterCount: Number(log.parameterCount),
    lossHistory: (log.lossHistory as [number, number][]) ?? [],
  };
}
