// The sampler's settings, checked once before any request is sent. Errors name the field as
// the run configuration (trainer.proto RunConfig) spells it. The defaults are the
// reference's where METHOD.md gives one (beta 0.4, alpha 0.2, 128 new tokens, the system
// prompt); the rest are this trainer's.
import { MethodInputError } from "#core/math/errors.ts";
import { validateAlpha, validateBeta } from "#core/math/selection.ts";
import type { StepLabelKind } from "#core/math/selection.ts";
import { SamplerConfigError } from "./errors.ts";
import type { ServedPair } from "./endpoint-pool.ts";
import { SYSTEM_PROMPT } from "./prompt.ts";

export type SamplingMethod = "lightreasoner" | "sft";

export interface SamplerConfig {
  /** "lightreasoner": KL-selected steps with soft labels; "sft": whole trajectories, answers checked. */
  method: SamplingMethod;
  /** Run seed; every trajectory's seed derives from it and the problem id. */
  seed: number;
  /** A step is kept when its KL is strictly above beta (nats). */
  beta: number;
  /** Plausibility threshold of the soft label's support. */
  alpha: number;
  /** What a kept step is trained toward (stepLabel): the contrastive soft label, or the expert's argmax (an ablation). */
  label: StepLabelKind;
  /** SPARSE (tens of bytes a step, computed by the server) or FULL (both vocabularies). */
  encoding: "sparse" | "full";
  /** FULL only: float32 gives the same samples as SPARSE; float16 halves the bytes and rounds. */
  fullDtype: "float32" | "float16";
  /** SPARSE only: top tokens of each model to list (not needed by the method; kept small). */
  topK: number;
  /** 0 is greedy. */
  temperature: number;
  topP: number;
  maxNewTokens: number;
  /** "" sends no system turn. */
  systemPrompt: string;
  stopStrings: string[];
  /** Trajectories in flight per lane (per endpoint address). */
  concurrency: number;
  /** SFT: trajectories written per problem until one is right. */
  sftAttempts: number;
  /** Times one problem may be retried after endpoint failures before the run fails. */
  maxRetries: number;
  /** The run fails when no endpoint made progress for this long. */
  giveUpAfterMs: number;
  /** An open call with no message for this long is treated as broken. */
  stallTimeoutMs: number;
}

export const SAMPLER_DEFAULTS: Readonly<Omit<SamplerConfig, "seed">> = Object.freeze({
  method: "lightreasoner",
  beta: 0.4,
  alpha: 0.2,
  label: "contrastive",
  encoding: "sparse",
  fullDtype: "float32",
  topK: 4,
  temperature: 0,
  topP: 1,
  maxNewTokens: 128,
  systemPrompt: SYSTEM_PROMPT,
  stopStrings: [],
  concurrency: 16,
  sftAttempts: 1,
  maxRetries: 8,
  giveUpAfterMs: 60_000,
  stallTimeoutMs: 120_000,
});

/** Fills in defaults and checks every field; `served` adds the endpoints' limits to the checks. */
export function resolveSamplerConfig(partial: Partial<SamplerConfig> & { seed: number }, served?: ServedPair): SamplerConfig {
  const defined = Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined));
  const config = { ...SAMPLER_DEFAULTS, ...defined } as SamplerConfig;
  methodInput("selection.beta", () => validateBeta(config.beta));
  methodInput("selection.alpha", () => validateAlpha(config.alpha));
  const integer = (field: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER) => {
    if (!Number.isInteger(value) || value < min || value > max) throw new SamplerConfigError(field, `must be an integer in [${min}, ${max}], got ${value}`);
  };
  integer("seed", config.seed, 0, 0xffffffff);
  if (config.method !== "lightreasoner" && config.method !== "sft") throw new SamplerConfigError("method", `must be "lightreasoner" or "sft", got ${JSON.stringify(config.method)}`);
  if (config.label !== "contrastive" && config.label !== "expert_argmax") throw new SamplerConfigError("selection.label", `must be "contrastive" or "expert_argmax", got ${JSON.stringify(config.label)}`);
  if (config.encoding !== "sparse" && config.encoding !== "full") throw new SamplerConfigError("sampling.encoding", `must be "sparse" or "full", got ${JSON.stringify(config.encoding)}`);
  if (config.fullDtype !== "float32" && config.fullDtype !== "float16") throw new SamplerConfigError("sampling.dtype", `must be "float32" or "float16", got ${JSON.stringify(config.fullDtype)}`);
  integer("sampling.top_k", config.topK, 0, served?.maxTopK);
  if (!(Number.isFinite(config.temperature) && config.temperature >= 0)) throw new SamplerConfigError("sampling.params.temperature", `must be a finite number >= 0, got ${config.temperature}`);
  if (!(config.topP > 0 && config.topP <= 1)) throw new SamplerConfigError("sampling.params.top_p", `must be in (0, 1], got ${config.topP}`);
  integer("sampling.params.max_new_tokens", config.maxNewTokens, 1, served?.maxNewTokens);
  if (typeof config.systemPrompt !== "string") throw new SamplerConfigError("sampling.system_prompt", "must be a string");
  config.stopStrings.forEach((s, i) => {
    if (typeof s !== "string" || s.length === 0) throw new SamplerConfigError(`sampling.params.stop_strings[${i}]`, "must be a non-empty string");
  });
  integer("sampling.concurrency", config.concurrency, 1);
  integer("sft.attempts_per_problem", config.sftAttempts, 1);
  integer("maxRetries", config.maxRetries, 0);
  integer("giveUpAfterMs", config.giveUpAfterMs, 1);
  integer("stallTimeoutMs", config.stallTimeoutMs, 1);
  return config;
}

/** The settings a sample store must keep across resumes: change one and the samples would not mix. */
export function storeSettings(config: SamplerConfig, expertFingerprint: string, amateurFingerprint: string): Record<string, unknown> {
  const { method, seed, beta, alpha, label, temperature, topP, maxNewTokens, systemPrompt, stopStrings, sftAttempts } = config;
  // The label joined the settings later: stores written before it hold contrastive labels and keep their settings.
  return { method, seed, beta, alpha, ...(label !== "contrastive" ? { label } : {}), temperature, topP, maxNewTokens, systemPrompt, stopStrings, sftAttempts, expertFingerprint, amateurFingerprint };
}

function methodInput(field: string, check: () => void): void {
  try {
    check();
  } catch (err) {
    if (err instanceof MethodInputError) throw new SamplerConfigError(field, err.problem);
    throw err;
  }
}
