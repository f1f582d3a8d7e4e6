// What the inference server accepts: one validated schema with one documented default per
// limit, used by the CLI flags, startInferenceServer and GetModelInfo's ServerLimits.
import { z } from "zod";

const count = (min: number) => z.number().int().min(min);

export const serverLimitsSchema = z
  .object({
    /** Largest SamplingParams.max_new_tokens accepted. */
    maxNewTokens: count(1).default(1024),
    /** max_new_tokens when a request gives 0 (the method samples at most 128 new tokens). */
    defaultMaxNewTokens: count(1).default(128),
    /** Most prompt tokens accepted after encoding. */
    maxPromptTokens: count(1).default(4096),
    /** Concurrent calls that run the models (StreamTrajectories, Generate, Score). */
    maxStreams: count(1).default(64),
    /** Unfinished trajectories one StreamTrajectories call may hold. */
    maxTrajectoriesPerStream: count(1).default(256),
    /** Sequences computed together in one batched forward pass; more wait in a queue. */
    maxBatchSize: count(1).default(16),
    /** Largest DistributionRequest.top_k. */
    maxTopK: count(0).default(64),
    /** Most stop strings per request. */
    maxStopStrings: count(0).default(8),
    /** Largest adapter_model.safetensors, in bytes (the contract's field is a uint32). */
    maxAdapterBytes: count(1).max(0xffffffff).default(512 * 1024 * 1024),
    /**
     * Most bytes of LoRA factors (float32 A and scaled B) held at once by loaded adapters and
     * unloaded ones still in use; a load beyond it evicts the least recently used adapters
     * that are neither active nor leased, or fails RESOURCE_EXHAUSTED. 1 GiB holds about 60
     * rank-8 adapters on every projection of a Qwen2.5-0.5B-shaped expert (17.6 MiB each).
     */
    maxResidentAdapterBytes: count(1).default(1024 * 1024 * 1024),
  })
  .refine((l) => l.defaultMaxNewTokens <= l.maxNewTokens, { message: "must not exceed maxNewTokens", path: ["defaultMaxNewTokens"] });

export type ServerLimits = z.infer<typeof serverLimitsSchema>;

/** A server setting (flag or option) is out of range. */
export class InvalidServerConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidServerConfigError";
  }
}

/** The limits with every unset one at its default; an out-of-range value names the limit. */
export function resolveLimits(partial: Partial<ServerLimits> = {}): ServerLimits {
  const defined = Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined));
  const parsed = serverLimitsSchema.safeParse(defined);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((issue) => `limits.${issue.path.join(".")}: ${issue.message}`);
    throw new InvalidServerConfigError(issues.join("; "));
  }
  return parsed.data;
}

/** Every limit at its default (what --help shows). */
export const DEFAULT_LIMITS: Readonly<ServerLimits> = Object.freeze(resolveLimits());
