// LoRA training of the expert on trajectories: the fine-tuning stage of LightReasoner (soft
// labels at KL-selected steps) and, with another objective, the SFT baseline. Builds the
// adapter on the chosen tfjs backend and the frozen expert on the machine's gradient engine
// (gradient-engine.ts: TensorFlow.js autodiff, or ONNX Runtime running the expert), runs the
// shared training loop, writes resumable checkpoints (PEFT adapter + optimizer + trainer
// state) and hands the adapter to `onAdapter` every pushEverySteps steps and at the end
// (online mode pushes it to the inference servers there). Deterministic from the seed:
// adapter init, data order, dropout. Resuming from a checkpoint gives the adapter an uninterrupted run would have.
import { join } from "node:path";
import { readPeftAdapter, writePeftAdapter } from "#core/formats/peft.ts";
import type { ModelConfig } from "#core/model/config.ts";
import type { LoraAdapter } from "#core/model/lora.ts";
import type { WeightMap } from "#core/model/weights.ts";
import type { BackendChoice, BackendKind } from "#trainer/model/backend.ts";
import { describeBackendChoice, selectBackend } from "#trainer/model/backend.ts";
import { LoraLayers } from "#trainer/model/lora.ts";
import { OnnxLoraExpert } from "#trainer/model/onnx-lora-expert.ts";
import { CausalLM } from "#trainer/model/transformer.ts";
import type { NamedVariable } from "./adamw.ts";
import { AdamW } from "./adamw.ts";
import type { TrajectorySource } from "./batching.ts";
import { microBatches } from "./batching.ts";
import { TrainingConfigError } from "./errors.ts";
import type { EngineChoice, EngineKind } from "./gradient-engine.ts";
import { chooseLoraEngine, describeEngineChoice, onnxEngine, tfjsEngine } from "./gradient-engine.ts";
import { checkResumable, latestCheckpoint, loadOptimizerState, OPTIMIZER_FILE, readTrainerState, saveOptimizerState, writeCheckpoint } from "./checkpoint.ts";
import type { TrainingObjective } from "./objective.ts";
import { lightReasonerObjective } from "./objective.ts";
import type { TrainingConfig, TrainingConfigInput } from "./training-config.ts";
import { resolveTrainingConfig } from "./training-config.ts";
import type { LoopProgress, PieceLimits, StepEvent, StopReason } from "./training-loop.ts";
import { freshProgress, isFinished, runTrainingLoop } from "./training-loop.ts";

/** Settings that only change how often a run saves or reports; a resumed run may change them. */
const CADENCE_FIELDS = ["checkpointEverySteps", "keepCheckpoints", "pushEverySteps"];

export interface LoraTrainingOptions extends PieceLimits {
  /** The frozen base model: the expert. */
  expert: { config: ModelConfig; weights: WeightMap; source?: string };
  /** A list (visited for as many epochs as maxSteps needs) or a stream read once. */
  trajectories: TrajectorySource;
  config?: TrainingConfigInput | TrainingConfig;
  /** Default: LightReasoner's soft-label KL on the selected steps. */
  objective?: TrainingObjective;
  /** Start from this adapter instead of a fresh one (a checkpoint, when resumed from, wins). */
  initialAdapter?: LoraAdapter;
  /** Where checkpoints go; without it nothing is written and nothing resumed. */
  checkpointDir?: string;
  /** Continue from the newest checkpoint in checkpointDir when there is one (default true). */
  resume?: boolean;
  /** tfjs backend; default LR_TFJS_BACKEND or the best available. */
  backend?: BackendKind | "auto";
  /**
   * Gradient engine; default LR_TRAIN_ENGINE or the machine's best (see gradient-engine.ts).
   * A choice already made (the trainer's, once at start-up) is used and logged as made, with
   * its own reason: chosen again here it would read "forced by option".
   */
  engine?: EngineKind | "auto" | EngineChoice;
  /** ONNX Runtime engine: most tokens one forward/backward pass holds (bounds activation memory). */
  tokenBudget?: number;
  /** Written into adapter_config.json as base_model_name_or_path. */
  baseModelName?: string;
  onStep?: (event: StepEvent) => void | Promise<void>;
  /** The adapter after `step` optimizer steps, every pushEverySteps steps and when the run finishes. */
  onAdapter?: (adapter: LoraAdapter, step: number) => void | Promise<void>;
  /** A checkpoint was written. */
  onCheckpoint?: (dir: string, step: number) => void;
  /** One line saying which tfjs backend runs and why. */
  log?: (line: string) => void;
}

export interface LoraTrainingResult {
  adapter: LoraAdapter;
  stoppedBy: StopReason;
  /** True when the run reached maxSteps or its stream ended; false when this piece paused it. */
  finished: boolean;
  progress: LoopProgress;
  /** The step the run resumed from, or null for a fresh start. */
  resumedFrom: number | null;
  /** Seconds this call took. */
  wallSeconds: number;
  backend: BackendChoice;
  engine: EngineChoice;
  config: TrainingConfig;
  objective: string;
}

export async function trainLora(options: LoraTrainingOptions): Promise<LoraTrainingResult> {
  const started = performance.now();
  const config = resolveTrainingConfig(options.config ?? {});
  const objective = options.objective ?? lightReasonerObjective;
  const backend = await selectBackend({ force: options.backend });
  options.log?.(describeBackendChoice(backend));
  const engineChoice = typeof options.engine === "object" ? options.engine : chooseLoraEngine(backend, options.engine);
  options.log?.(describeEngineChoice(engineChoice));
  const { expert } = options;
  const saved = options.checkpointDir && options.resume !== false ? latestCheckpoint(options.checkpointDir) : null;
  const identity = { kind: "lora", objective: objective.name, config: config as unknown as Record<string, unknown> };
  const state = saved ? readTrainerState(saved.dir) : null;
  if (state) checkResumable(state, identity, CADENCE_FIELDS, saved!.dir);

  const start = saved ? readPeftAdapter(saved.dir, expert.config) : options.initialAdapter;
  if (start) checkSameShape(start, config);
  // The settings' module order (not the file's) numbers the pairs, which key the dropout masks.
  const lora = start
    ? LoraLayers.fromAdapter(expert.config, { settings: config.lora, pairs: start.pairs }, { seed: config.seed, source: saved?.dir ?? "initialAdapter" })
    : LoraLayers.create(expert.config, config.lora, config.seed);
  // ONNX Runtime reads the expert's weight arrays in place; tfjs copies them into its backend.
  let onnx: OnnxLoraExpert | null = null;
  let model: CausalLM | null = null;
  try {
    if (engineChoice.kind === "onnxruntime") onnx = await OnnxLoraExpert.create(expert.config, expert.weights, config.lora, { tokenBudget: options.tokenBudget });
    else model = new CausalLM(expert.config, expert.weights, { adapter: lora, source: expert.source });
  } catch (err) {
    lora.dispose();
    throw err;
  }
  const params = loraParams(lora);
  const engine = onnx ? onnxEngine(onnx, lora) : tfjsEngine(model!, params.map((p) => p.variable), config.gradientCheckpointing);
  const optimizer = new AdamW(params, { beta1: config.adamBeta1, beta2: config.adamBeta2, epsilon: config.adamEpsilon, weightDecay: config.weightDecay });
  try {
    const progress = state ? structuredClone(state.progress) : freshProgress();
    if (saved) optimizer.load(loadOptimizerState(join(saved.dir, OPTIMIZER_FILE)), join(saved.dir, OPTIMIZER_FILE));
    // Dropout masks are a function of (seed, pass number): replay the pass counter.
    for (let i = 0; i < progress.forwardPasses; i++) lora.beginPass();
    const shapes = new Map(params.map((p) => [p.name, p.variable.shape]));
    const batches = microBatches(options.trajectories, progress.cursor, {
      objective,
      batchSize: config.batchSize,
      vocabSize: expert.config.vocabSize,
      seed: config.seed,
      shuffle: config.shuffle,
    });
    const adapterOptions = { baseModel: options.baseModelName ?? expert.source ?? null };
    const stoppedBy = await runTrainingLoop({
      engine,
      params,
      optimizer,
      config,
      batches,
      progress,
      limits: options,
      onStep: options.onStep,
      checkpoint: options.checkpointDir
        ? (p) => {
            const dir = writeCheckpoint(options.checkpointDir!, { ...identity, progress: p }, (tmp) => {
              writePeftAdapter(tmp, lora.toAdapter(), adapterOptions);
              saveOptimizerState(join(tmp, OPTIMIZER_FILE), optimizer.state(), shapes);
            }, config.keepCheckpoints);
            options.onCheckpoint?.(dir, p.step);
          }
        : undefined,
      periodic: options.onAdapter ? { every: config.pushEverySteps, run: (step) => options.onAdapter!(lora.toAdapter(), step) } : undefined,
    });
    await batches.return(undefined);
    return {
      adapter: lora.toAdapter(),
      stoppedBy,
      finished: isFinished(stoppedBy),
      progress,
      resumedFrom: saved?.step ?? null,
      wallSeconds: (performance.now() - started) / 1000,
      backend,
      engine: engineChoice,
      config,
      objective: objective.name,
    };
  } finally {
    optimizer.dispose();
    model?.dispose();
    await onnx?.dispose();
    lora.dispose();
  }
}

/** A and B of every pair, named as PEFT names them, in the adapter's stable order. */
function loraParams(lora: LoraLayers): NamedVariable[] {
  return lora.targets().flatMap((name) => {
    const [a, b] = lora.variables((n) => n === name);
    const base = name.replace(/\.weight$/, "");
    return [
      { name: `${base}.lora_A`, variable: a },
      { name: `${base}.lora_B`, variable: b },
    ];
  });
}

/** A starting adapter must have the shape the settings describe, or the settings would lie. */
function checkSameShape(adapter: LoraAdapter, config: TrainingConfig): void {
  const { rank, alpha, targetModules } = adapter.settings;
  const want = config.lora;
  if (rank !== want.rank || alpha !== want.alpha || [...targetModules].sort().join() !== [...want.targetModules].sort().join()) {
    throw new TrainingConfigError(
      "lora",
      `the starting adapter has rank ${rank}, alpha ${alpha}, modules ${targetModules.join(",")}; the settings say rank ${want.rank}, alpha ${want.alpha}, modules ${want.targetModules.join(",")}`,
    );
  }
}
