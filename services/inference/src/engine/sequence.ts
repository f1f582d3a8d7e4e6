// One sequence being generated: what it asked for, its own KV caches and sampler, and how
// it chooses its next token. The scheduler moves sequences through steps; this module
// decides, for one sequence, what a step's distributions mean.
import { SeededRandom } from "#core/math/random.ts";
import { sampleContrastiveToken, sampleToken } from "#core/math/sampling.ts";
import type { LogProbs } from "#core/math/distribution.ts";
import { contrastiveScores, gather, plausibleSet } from "#core/math/selection.ts";
import type { TokenStreamDecoder } from "#core/formats/tokenizer.ts";
import type { KvCache } from "#inference/model/kv-cache.ts";
import type { SamplingGraph } from "#inference/model/sampling-graph.ts";
import type { AdapterChoice, ExpertLease } from "./adapter-registry.ts";

/**
 * lockstep: the expert writes and both distributions are reported (the trainer's feed);
 * expert / amateur: one model writes alone; contrastive: the expert's plausible set, ranked
 * by log p_E - log p_A.
 */
export type SequenceMode = "lockstep" | "expert" | "amateur" | "contrastive";

export type FinishReason = "length" | "stop" | "eos" | "context" | "cancelled" | "error";

export interface SequenceRequest {
  mode: SequenceMode;
  promptIds: number[];
  temperature: number;
  topP: number;
  seed: number;
  maxNewTokens: number;
  stopStrings: string[];
  /** Plausibility threshold for contrastive decoding. */
  alpha: number;
  /** Leave special tokens (EOS, chat markers) out of the decoded text (Generate) or keep them (trajectories). */
  skipSpecialTokens: boolean;
  /** The expert's weights (default: the adapter active at submission); ignored when only the amateur runs. */
  adapter?: AdapterChoice;
}

export interface StepEvent {
  /** 0-based index within the completion. */
  step: number;
  /** Position of the chosen token in the whole sequence. */
  position: number;
  tokenId: number;
  /** Text this token adds to the completion (may be empty mid-character). */
  text: string;
  /** Distributions the token was chosen from, given the prefix before `position`. */
  logpExpert?: LogProbs;
  logpAmateur?: LogProbs;
  adapterVersion: string;
}

export interface FinishEvent {
  reason: FinishReason;
  error?: Error;
  stopString?: string;
  promptTokens: number;
  completionTokens: number;
  completionText: string;
  queueWaitMs: number;
  timeToFirstStepMs: number;
  totalMs: number;
  adapterVersion: string;
}

/** Where a sequence's output goes. onStep returns false when the reader is behind. */
export interface SequenceSink {
  onStart?(info: { adapterVersion: string; seed: number }): void;
  onStep(event: StepEvent): boolean;
  onFinish(event: FinishEvent): void;
}

export class Sequence {
  readonly rng: SeededRandom;
  readonly completion: number[] = [];
  completionText = "";
  /** Tokens the caches have not seen yet: the prompt, then each chosen token. */
  pending: number[];
  expertCache: KvCache | null = null;
  amateurCache: KvCache | null = null;
  /** Taken at submission, so what is activated, unloaded or evicted later changes nothing for it. */
  lease: ExpertLease | null = null;
  /** Set by the sink's back-pressure; a paused sequence sits out steps until resumed. */
  paused = false;
  cancelled = false;
  finished = false;
  readonly submittedAt = performance.now();
  admittedAt = 0;
  firstStepAt = 0;

  constructor(
    readonly request: SequenceRequest,
    readonly sink: SequenceSink,
    readonly decoder: TokenStreamDecoder,
  ) {
    this.rng = new SeededRandom(request.seed);
    this.pending = [...request.promptIds];
  }

  get needsExpert(): boolean {
    return this.request.mode !== "amateur";
  }

  get needsAmateur(): boolean {
    return this.request.mode !== "expert";
  }

  /**
   * The next token from this step's distributions, using only this sequence's sampler.
   * Temperature and nucleus sampling run on `sampling` when given (the same single draw from
   * the sequence's generator); greedy and contrastive choices are core/math's.
   */
  async choose(logpExpert: LogProbs | undefined, logpAmateur: LogProbs | undefined, sampling: SamplingGraph | null = null): Promise<number> {
    const { mode, temperature, topP, alpha } = this.request;
    if (mode === "contrastive") {
      if (temperature === 0 || topP >= 1) return sampleContrastiveToken(logpExpert!, logpAmateur!, { alpha, temperature }, this.rng);
      // Nucleus over the plausible set: the scores play the role of log-probabilities.
      const ids = plausibleSet(logpExpert!, alpha);
      const scores = Float32Array.from(contrastiveScores(gather(logpExpert!, ids), gather(logpAmateur!, ids)));
      return ids[sampleToken(scores, { temperature, topP }, this.rng)];
    }
    const logp = mode === "amateur" ? logpAmateur! : logpExpert!;
    if (sampling && temperature > 0) return sampling.sample(logp, { temperature, topP }, this.rng.next());
    return sampleToken(logp, { temperature, topP }, this.rng);
  }
}
