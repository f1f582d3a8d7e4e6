// Everything a handler needs from the running server, passed in one object so handlers stay
// plain functions of (request, context) and tests can build servers side by side.
import type { Logger } from "pino";
import type { AdapterRegistry } from "#inference/engine/adapter-registry.ts";
import type { ModelPair } from "#inference/engine/model-pair.ts";
import type { Scheduler } from "#inference/engine/scheduler.ts";
import type { PairSummaryGraph } from "#inference/model/pair-summary-graph.ts";
import type { FinishEvent, FinishReason as EngineFinishReason } from "#inference/engine/sequence.ts";
import { FinishReason } from "#core/gen/lightreasoner/v1/common_pb.ts";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { CompletionEndSchema, TimingsSchema } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { ShuttingDownError } from "#inference/engine/errors.ts";
import type { InferenceMetrics } from "#inference/metrics.ts";
import type { CallSlots } from "./calls.ts";
import type { ServerLimits } from "./limits.ts";

export interface ServingContext {
  pair: ModelPair;
  /** Logits width both models share; token ids are below it. */
  vocabSize: number;
  /** The smaller of the two models' context lengths. */
  maxContextTokens: number;
  /** The prefill budget: most prompt tokens one model step reads (--prefill-batch-tokens). */
  prefillTokens: number;
  scheduler: Scheduler;
  /** SPARSE step summaries and FULL float16 rounding on ONNX Runtime. */
  pairGraphs: PairSummaryGraph;
  adapters: AdapterRegistry;
  limits: ServerLimits;
  metrics: InferenceMetrics;
  logger: Logger;
  slots: CallSlots;
  /** Aborted when the server starts shutting down. */
  draining: AbortSignal;
}

const FINISH_REASONS: Record<EngineFinishReason, FinishReason> = {
  length: FinishReason.LENGTH,
  stop: FinishReason.STOP_STRING,
  eos: FinishReason.EOS,
  context: FinishReason.CONTEXT_LIMIT,
  cancelled: FinishReason.CANCELLED,
  error: FinishReason.ERROR,
};

export function timingsOf(f: FinishEvent): MessageInitShape<typeof TimingsSchema> {
  return { queueWaitMs: f.queueWaitMs, timeToFirstStepMs: f.timeToFirstStepMs, totalMs: f.totalMs };
}

/** How a trajectory or a generation ended, as both report it; Generate passes its own timings (first chunk, not first step). */
export function completionEndOf(f: FinishEvent, timings = timingsOf(f)): MessageInitShape<typeof CompletionEndSchema> {
  return {
    finishReason: FINISH_REASONS[f.reason],
    stopString: f.stopString ?? "",
    usage: { promptTokens: f.promptTokens, completionTokens: f.completionTokens },
    timings,
  };
}

/** Admits a call that runs the models: refused while draining or when every slot is taken; returns the slot's release. */
export function admitCall(ctx: ServingContext): () => void {
  if (ctx.draining.aborted) throw new ShuttingDownError();
  return ctx.slots.acquire();
}
