// A run's configuration, from the contract's RunConfig (every field optional) to the plan the
// trainer executes (every field resolved and checked), and back to a RunConfig with the
// resolved values that Run.config reports and run.json stores. Defaults are not decided
// here: sampling's live in sampling/config.ts, training's in training/training-config.ts;
// this module only maps names and reports a bad field by its proto path.
import { randomInt } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { DistributionEncoding } from "#core/gen/lightreasoner/v1/common_pb.ts";
import type { ProblemSource, RunConfig } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import { LrSchedule, ProblemFormat, RunConfigSchema, RunMode, SamplingAdapter, SelectionLabel, TrainingMethod } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import type { StepLabelKind } from "#core/math/selection.ts";
import type { SamplerConfig } from "#trainer/sampling/config.ts";
import { resolveSamplerConfig } from "#trainer/sampling/config.ts";
import type { EndpointTarget } from "#trainer/sampling/targets.ts";
import { parseEndpointTarget, parseEndpointTargets } from "#trainer/sampling/targets.ts";
import { TrainingConfigError } from "#trainer/training/errors.ts";
import type { TrainingConfig } from "#trainer/training/training-config.ts";
import { resolveTrainingConfig } from "#trainer/training/training-config.ts";
import { GrpcError, Status } from "#core/grpc/adapter.ts";
import { RunConfigError } from "./errors.ts";

/** What a run id may be: it names the run's directory, so nothing that could climb out of the runs directory. */
export const RUN_ID = /^[A-Za-z0-9._-]{1,64}$/;

export type RunModeName = "offline" | "online";
export type MethodName = "lightreasoner" | "sft";
export type ProblemLayoutChoice = "gsm8k" | "prompt" | "detect";
/** Which expert writes the run's trajectories: the base, or the run's latest pushed adapter (online). */
export type SamplingAdapterName = "base" | "latest_pushed";

export interface ProblemSourcePlan {
  path: string;
  layout: ProblemLayoutChoice;
  offset: number;
  /** 0: every problem after the offset. */
  limit: number;
}

/** Everything a run does, resolved and checked. */
export interface RunPlan {
  name: string;
  mode: RunModeName;
  method: MethodName;
  /** Null only when training on imported samples. */
  problems: ProblemSourcePlan | null;
  /** Null: no evaluation. */
  evalProblems: ProblemSourcePlan | null;
  /** "" unless training on a file in the reference scripts' sample format. */
  importSamplesPath: string;
  endpoints: string[];
  seed: number;
  sampler: SamplerConfig;
  /** Named in every trajectory request, so no other client's activation changes the samples. */
  samplingAdapter: SamplingAdapterName;
  /** Activate the final adapter on every replica after the last stage (otherwise only uploaded). */
  activateFinalAdapter: boolean;
  /** The id of the finished run whose final adapter this run starts from; "" starts from the base expert. */
  startFromRun: string;
  training: TrainingConfig;
}

/** SamplingConfig's field numbers that moved into its SamplingParams (trainer.proto says so). */
const MOVED_SAMPLING_FIELDS = new Set([1, 2, 3, 5]);

export interface RunConfigDefaults {
  /** The trainer's configured inference endpoints, used when the config names none. */
  endpoints: readonly string[];
  /**
   * Endpoints a run may name besides `endpoints` (the operator's --allow-inference). The
   * trainer dials what a run names and presents its credential there, so a caller must not be
   * able to point it at a host of its own choosing.
   */
  allowedEndpoints?: readonly string[];
  /** Draws the seed of a config that sets none. */
  drawSeed?: () => number;
}

const SCHEDULES: Record<LrSchedule, TrainingConfig["schedule"] | undefined> = {
  [LrSchedule.UNSPECIFIED]: undefined,
  [LrSchedule.CONSTANT]: "constant",
  [LrSchedule.LINEAR]: "linear",
  [LrSchedule.COSINE]: "cosine",
};

/** Resolves and checks a RunConfig; the first bad field throws RunConfigError (INVALID_ARGUMENT). */
export function resolveRunPlan(config: RunConfig | undefined, defaults: RunConfigDefaults): RunPlan {
  const c = config ?? create(RunConfigSchema);
  const method = methodOf(c.method);
  const mode = modeOf(c.mode);
  const importSamplesPath = c.importSamplesPath.trim();
  const problems = sourceOf(c.problems, "problems");
  const evalProblems = sourceOf(c.evalProblems, "eval_problems");
  if (importSamplesPath) {
    if (method !== "lightreasoner") throw new RunConfigError("import_samples_path", "imported samples train the LIGHTREASONER method only");
    if (problems) throw new RunConfigError("problems", "give either problems to sample or import_samples_path, not both");
    if (mode === "online") throw new RunConfigError("mode", "imported samples are trained on offline (there is nothing to sample)");
  } else if (!problems) {
    throw new RunConfigError("problems.path", "is required (or set import_samples_path)");
  }
  const endpoints = c.inferenceEndpoints.length > 0 ? [...c.inferenceEndpoints] : [...defaults.endpoints];
  const targets = asRunConfigError(() => parseEndpointTargets(endpoints, "inference_endpoints"));
  if (c.inferenceEndpoints.length > 0) refuseUnlistedEndpoints(targets, [...defaults.endpoints, ...(defaults.allowedEndpoints ?? [])]);
  const seed = c.seed ?? (defaults.drawSeed ?? (() => randomInt(0, 2 ** 31)))();

  const s = c.sampling;
  if (method === "lightreasoner" && s?.encoding === DistributionEncoding.NONE) {
    throw new RunConfigError("sampling.encoding", "NONE sends no distributions, but LIGHTREASONER needs both models' distributions (use SPARSE or FULL)");
  }
  if (s?.$unknown?.some((field) => MOVED_SAMPLING_FIELDS.has(field.no))) {
    // A client built before the move would otherwise have its settings dropped without a word.
    throw new RunConfigError("sampling", "temperature, top_p, max_new_tokens and stop_strings (fields 1, 2, 3, 5) moved to sampling.params");
  }
  const samplingAdapter = samplingAdapterOf(s?.adapter ?? SamplingAdapter.UNSPECIFIED);
  if (samplingAdapter === "latest_pushed" && mode !== "online") {
    throw new RunConfigError("sampling.adapter", "SAMPLING_ADAPTER_LATEST_PUSHED needs mode RUN_MODE_ONLINE: an offline run pushes its first adapter only after sampling");
  }
  const p = s?.params;
  if (p?.seed !== undefined) throw new RunConfigError("sampling.params.seed", "must be unset: every trajectory's seed derives from the run's seed (set seed instead)");
  const sampler = asRunConfigError(() =>
    resolveSamplerConfig({
      method,
      seed,
      beta: c.selection?.beta,
      alpha: c.selection?.alpha,
      label: labelOf(c.selection?.label ?? SelectionLabel.UNSPECIFIED),
      encoding: s?.encoding === DistributionEncoding.FULL ? "full" : undefined,
      temperature: p?.temperature,
      topP: p?.topP,
      maxNewTokens: p?.maxNewTokens || undefined,
      systemPrompt: s?.systemPrompt,
      stopStrings: p && p.stopStrings.length > 0 ? [...p.stopStrings] : undefined,
      concurrency: s?.concurrency,
      sftAttempts: c.sft?.attemptsPerProblem,
    }),
  );

  const budgets = sftBudgets(c, method);
  const o = c.optimization;
  const l = c.lora;
  const training = asRunConfigError(() =>
    resolveTrainingConfig(
      {
        lora: {
          rank: l?.rank,
          alpha: l?.alpha,
          dropout: l?.dropout,
          targetModules: l && l.targetModules.length > 0 ? [...l.targetModules] : undefined,
        },
        learningRate: o?.learningRate,
        batchSize: o?.batchSize,
        gradientAccumulation: o?.gradientAccumulation,
        maxSteps: o?.maxSteps,
        warmupSteps: o?.warmupSteps,
        weightDecay: o?.weightDecay,
        schedule: o ? SCHEDULES[o.schedule] : undefined,
        checkpointEverySteps: o?.checkpointEverySteps,
        pushEverySteps: o?.pushEverySteps,
        ...budgets,
        seed,
      },
      "training",
    ),
  );
  const startFromRun = c.startFromRun.trim();
  if (startFromRun !== "" && !RUN_ID.test(startFromRun)) throw new RunConfigError("start_from_run", `must be a run id (1 to 64 characters of [A-Za-z0-9._-]), got ${JSON.stringify(c.startFromRun)}`);
  if (sampler.label !== "contrastive" && method !== "lightreasoner") throw new RunConfigError("selection.label", "applies to the LIGHTREASONER method only (SFT trains on whole trajectories)");
  return { name: c.name, mode, method, problems, evalProblems, importSamplesPath, endpoints, seed, sampler, samplingAdapter, activateFinalAdapter: c.activateFinalAdapter, startFromRun, training };
}

/** The plan as a RunConfig with every field set: what Run.config reports and run.json keeps. */
export function resolvedRunConfig(plan: RunPlan): RunConfig {
  const { sampler: s, training: t } = plan;
  const source = (p: ProblemSourcePlan | null) =>
    p ? { path: p.path, format: p.layout === "gsm8k" ? ProblemFormat.GSM8K : p.layout === "prompt" ? ProblemFormat.PROMPT : ProblemFormat.UNSPECIFIED, offset: p.offset, limit: p.limit } : undefined;
  return create(RunConfigSchema, {
    name: plan.name,
    mode: plan.mode === "online" ? RunMode.ONLINE : RunMode.OFFLINE,
    method: plan.method === "sft" ? TrainingMethod.SFT : TrainingMethod.LIGHTREASONER,
    problems: source(plan.problems),
    evalProblems: source(plan.evalProblems),
    importSamplesPath: plan.importSamplesPath,
    inferenceEndpoints: plan.endpoints,
    sampling: {
      params: { temperature: s.temperature, topP: s.topP, maxNewTokens: s.maxNewTokens, stopStrings: s.stopStrings },
      systemPrompt: s.systemPrompt,
      encoding: plan.method === "sft" ? DistributionEncoding.NONE : s.encoding === "full" ? DistributionEncoding.FULL : DistributionEncoding.SPARSE,
      concurrency: s.concurrency,
      adapter: plan.samplingAdapter === "latest_pushed" ? SamplingAdapter.LATEST_PUSHED : SamplingAdapter.BASE,
    },
    selection: { beta: s.beta, alpha: s.alpha, label: s.label === "expert_argmax" ? SelectionLabel.EXPERT_ARGMAX : SelectionLabel.CONTRASTIVE },
    lora: { rank: t.lora.rank, alpha: t.lora.alpha, dropout: t.lora.dropout, targetModules: [...t.lora.targetModules] },
    optimization: {
      learningRate: t.learningRate,
      batchSize: t.batchSize,
      gradientAccumulation: t.gradientAccumulation,
      maxSteps: t.maxSteps,
      warmupSteps: t.warmupSteps,
      weightDecay: t.weightDecay,
      schedule: t.schedule === "constant" ? LrSchedule.CONSTANT : t.schedule === "cosine" ? LrSchedule.COSINE : LrSchedule.LINEAR,
      checkpointEverySteps: t.checkpointEverySteps,
      pushEverySteps: t.pushEverySteps,
    },
    sft: { attemptsPerProblem: s.sftAttempts, maxTunedTokens: t.maxTunedTokens ?? 0, maxWallSeconds: t.maxWallSeconds ?? 0 },
    seed: plan.seed,
    activateFinalAdapter: plan.activateFinalAdapter,
    startFromRun: plan.startFromRun,
  });
}

/** SFT's budgets matched to another run; 0 (or unset) is none. Only the SFT baseline is stopped this way. */
function sftBudgets(c: RunConfig, method: MethodName): { maxTunedTokens?: number; maxWallSeconds?: number } {
  const tokens = c.sft?.maxTunedTokens ?? 0;
  const seconds = c.sft?.maxWallSeconds ?? 0;
  if (!(Number.isFinite(seconds) && seconds >= 0)) throw new RunConfigError("sft.max_wall_seconds", `must be a finite number of seconds >= 0, got ${seconds}`);
  if (method !== "sft") {
    if (tokens > 0) throw new RunConfigError("sft.max_tuned_tokens", "stops the SFT baseline only; a LIGHTREASONER run ends at optimization.max_steps");
    if (seconds > 0) throw new RunConfigError("sft.max_wall_seconds", "stops the SFT baseline only; a LIGHTREASONER run ends at optimization.max_steps");
  }
  return { maxTunedTokens: tokens > 0 ? tokens : undefined, maxWallSeconds: seconds > 0 ? seconds : undefined };
}

function methodOf(method: TrainingMethod): MethodName {
  if (method === TrainingMethod.UNSPECIFIED || method === TrainingMethod.LIGHTREASONER) return "lightreasoner";
  if (method === TrainingMethod.SFT) return "sft";
  throw new RunConfigError("method", `unknown value ${method}`);
}

function modeOf(mode: RunMode): RunModeName {
  if (mode === RunMode.UNSPECIFIED || mode === RunMode.OFFLINE) return "offline";
  if (mode === RunMode.ONLINE) return "online";
  throw new RunConfigError("mode", `unknown value ${mode}`);
}

function samplingAdapterOf(adapter: SamplingAdapter): SamplingAdapterName {
  if (adapter === SamplingAdapter.UNSPECIFIED || adapter === SamplingAdapter.BASE) return "base";
  if (adapter === SamplingAdapter.LATEST_PUSHED) return "latest_pushed";
  throw new RunConfigError("sampling.adapter", `unknown value ${adapter}`);
}

function labelOf(label: SelectionLabel): StepLabelKind {
  if (label === SelectionLabel.UNSPECIFIED || label === SelectionLabel.CONTRASTIVE) return "contrastive";
  if (label === SelectionLabel.EXPERT_ARGMAX) return "expert_argmax";
  throw new RunConfigError("selection.label", `unknown value ${label}`);
}

function sourceOf(source: ProblemSource | undefined, field: string): ProblemSourcePlan | null {
  if (!source || source.path.trim() === "") {
    if (source && (source.offset > 0 || source.limit > 0)) throw new RunConfigError(`${field}.path`, "is empty but offset or limit is set");
    return null;
  }
  const layouts: Record<number, ProblemLayoutChoice> = { [ProblemFormat.UNSPECIFIED]: "detect", [ProblemFormat.GSM8K]: "gsm8k", [ProblemFormat.PROMPT]: "prompt" };
  const layout = layouts[source.format];
  if (layout === undefined) throw new RunConfigError(`${field}.format`, `unknown value ${source.format}`);
  return { path: source.path.trim(), layout, offset: source.offset, limit: source.limit };
}

/** The sampling and training resolvers name fields in their own words; report the proto path. */
function asRunConfigError<T>(resolve: () => T): T {
  try {
    return resolve();
  } catch (err) {
    if (err instanceof TrainingConfigError) throw new RunConfigError(protoPath(err.field), err.problem);
    if (err instanceof RunConfigError) throw err;
    if (err instanceof GrpcError && err.field) {
      throw new RunConfigError(err.field, err.message.startsWith(`${err.field}: `) ? err.message.slice(err.field.length + 2) : err.message);
    }
    throw err;
  }
}

/** "training.lora.rank" -> "lora.rank"; "training.learningRate" -> "optimization.learning_rate". */
function protoPath(field: string): string {
  const parts = field.replace(/^training\.?/, "").split(".").filter(Boolean);
  const snake = parts.map((p) => p.replace(/[A-Z]/g, (ch) => `_${ch.toLowerCase()}`));
  if (snake.length === 0) return "optimization";
  if (snake[0] === "lora") return snake.join(".");
  if (snake[0] === "seed") return "seed";
  return ["optimization", ...snake].join(".");
}

/** PERMISSION_DENIED for a named endpoint the operator did not list (--inference, --allow-inference). */
function refuseUnlistedEndpoints(targets: readonly EndpointTarget[], allowed: readonly string[]): void {
  const keyOf = (t: EndpointTarget) => `${t.kind}:${t.host.toLowerCase()}:${t.port}`;
  const listed = new Set(allowed.map((text) => keyOf(parseEndpointTarget(text))));
  targets.forEach((target, i) => {
    if (!listed.has(keyOf(target))) {
      throw new GrpcError(
        Status.PERMISSION_DENIED,
        `inference_endpoints[${i}]: ${JSON.stringify(target.text)} is not an endpoint this trainer may use (its operator lists them with --inference and --allow-inference)`,
        `inference_endpoints[${i}]`,
      );
    }
  });
}
