// InferenceService's handlers: they translate requests (request.ts), hand sequences to the
// scheduler or run a direct forward (Score), and encode what comes back. No model math and
// no batching decisions live here.
import { createHash } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Send, ServiceHandlers } from "#core/grpc/adapter.ts";
import type { GenerateResponseSchema, InferenceService, ModelDescriptionSchema, ScoreResponseSchema } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import type { TextTokenizer } from "#core/formats/tokenizer.ts";
import { InvalidRequestError } from "#inference/engine/errors.ts";
import type { FinishEvent, SequenceMode } from "#inference/engine/sequence.ts";
import type { ServedModel } from "#inference/engine/served-model.ts";
import type { ServingContext } from "./context.ts";
import { admitCall, completionEndOf, timingsOf } from "./context.ts";
import { encodeStepDistributions } from "./distributions.ts";
import { adapterChoiceOf, distributionSpecOf, encodePrompt, generationModeOf, samplingOf } from "./request.ts";
import { scoreSteps } from "./score-steps.ts";
import { StopStringHoldback } from "./stop-strings.ts";
import { streamTrajectoriesHandler } from "./trajectories.ts";

type Methods = (typeof InferenceService)["method"];

export function inferenceHandlers(ctx: ServingContext): ServiceHandlers<Methods> {
  const tokenizerFingerprint = fingerprintTokenizer(ctx.pair.expert.tokenizer);
  return {
    streamTrajectories: streamTrajectoriesHandler(ctx),
    generate: (request, send, call) => generate(ctx, request, send, call.signal),
    score: (request, send, call) => score(ctx, request, send, call.signal),
    getModelInfo: async () => {
      const { expert, amateur } = ctx.pair;
      const tokenizer = expert.tokenizer;
      return {
        expert: await describeModel(expert),
        amateur: await describeModel(amateur),
        vocabSize: ctx.vocabSize,
        tokenizer: {
          size: tokenizer.vocabSize,
          bosTokenId: tokenizer.addsSpecialTokens && tokenizer.bosTokenId !== null ? tokenizer.bosTokenId : undefined,
          eosTokenIds: [...tokenizer.eosTokenIds],
          padTokenId: tokenizer.padTokenId ?? undefined,
          hasChatTemplate: tokenizer.chatTemplate !== null,
          fingerprint: tokenizerFingerprint,
        },
        adapterVersion: ctx.adapters.activeVersion,
        limits: { ...ctx.limits, maxResidentAdapterBytes: BigInt(ctx.limits.maxResidentAdapterBytes) },
      };
    },
  };
}

async function describeModel(model: ServedModel): Promise<MessageInitShape<typeof ModelDescriptionSchema>> {
  const d = model.description;
  return {
    name: d.name,
    fingerprint: await model.fingerprint,
    modelType: d.modelType,
    numLayers: d.numLayers,
    hiddenSize: d.hiddenSize,
    maxContextTokens: d.maxContextTokens,
    source: d.source,
    executionProvider: model.session.provider,
  };
}

/** sha256 of every token's string and the special-token roles: equal for tokenizers the pair check accepts. */
function fingerprintTokenizer(tokenizer: TextTokenizer): string {
  const hash = createHash("sha256").update("lightreasoner-tokenizer-v1\n");
  for (let id = 0; id < tokenizer.vocabSize; id++) hash.update(`${tokenizer.tokenString(id) ?? ""}\0`);
  hash.update(JSON.stringify({ special: tokenizer.specialTokens, eos: [...tokenizer.eosTokenIds].sort((a, b) => a - b) }));
  return hash.digest("hex");
}

type GenerateRequest = Parameters<ServiceHandlers<Methods>["generate"]>[0];
type ScoreRequest = Parameters<ServiceHandlers<Methods>["score"]>[0];

const MODE_LABELS: Record<SequenceMode, string> = { lockstep: "trajectory", expert: "expert", amateur: "amateur", contrastive: "contrastive" };

/** Streams one generation: chunks as text becomes safe to send, then the finish. */
async function generate(ctx: ServingContext, request: GenerateRequest, send: Send<typeof GenerateResponseSchema>, signal: AbortSignal): Promise<void> {
  const release = admitCall(ctx);
  try {
    const prompt = encodePrompt(request.prompt, { tokenizer: ctx.pair.expert.tokenizer, vocabSize: ctx.vocabSize, maxTokens: ctx.limits.maxPromptTokens });
    const sampling = samplingOf(request.sampling, ctx.limits);
    const { mode, alpha } = generationModeOf(request.mode, request.alpha);
    const adapter = adapterChoiceOf(request.adapter);
    const holdback = new StopStringHoldback(sampling.stopStrings);
    let firstChunkMs = 0;
    const chunk = (text: string, tokenIds: number[], adapterVersion: string) => {
      firstChunkMs ||= performance.now();
      ctx.metrics.tokensStreamed.inc({ mode: MODE_LABELS[mode] }, tokenIds.length);
      return send({ event: { case: "chunk", value: { text, tokenIds, adapterVersion: mode === "amateur" ? "" : adapterVersion } } });
    };
    const started = performance.now();
    const finish = await new Promise<FinishEvent>((resolve, reject) => {
      let version = "";
      const handle = ctx.scheduler.submit(
        { mode, promptIds: prompt.ids, ...sampling, alpha, skipSpecialTokens: true, adapter },
        {
          onStart: (info) => (version = info.adapterVersion),
          onStep: (e) => {
            const ready = holdback.push(e.tokenId, e.text);
            if (!ready) return true;
            chunk(ready.text, ready.tokenIds, e.adapterVersion).then(
              () => handle.resume(),
              () => handle.cancel(),
            );
            return false;
          },
          onFinish: (f) => {
            signal.removeEventListener("abort", onAbort);
            if (f.reason === "error") return reject(f.error);
            if (signal.aborted) return reject(signal.reason);
            const rest = holdback.finish();
            if (rest) chunk(rest.text, rest.tokenIds, version).catch(() => {});
            resolve(f);
          },
        },
      );
      const onAbort = () => handle.cancel();
      signal.addEventListener("abort", onAbort, { once: true });
      if (signal.aborted) handle.cancel();
    });
    const timings = timingsOf(finish);
    // The contract times Generate's first step as its first chunk.
    if (firstChunkMs) timings.timeToFirstStepMs = Math.max(timings.queueWaitMs ?? 0, firstChunkMs - started);
    await send({
      event: {
        case: "finished",
        value: { end: completionEndOf(finish, timings), seed: sampling.seed },
      },
    });
  } finally {
    release();
  }
}

/** Both models over a given sequence, the reference for the incremental path, in the steps scoreSteps plans. */
async function score(ctx: ServingContext, request: ScoreRequest, send: Send<typeof ScoreResponseSchema>, signal: AbortSignal): Promise<void> {
  const release = admitCall(ctx);
  try {
    const { limits } = ctx;
    const { ids } = encodePrompt(request.prompt, { tokenizer: ctx.pair.expert.tokenizer, vocabSize: ctx.vocabSize, maxTokens: limits.maxPromptTokens + limits.maxNewTokens });
    const n = ids.length;
    if (n + 1 > ctx.maxContextTokens) throw new InvalidRequestError("prompt", `has ${n} tokens; scoring needs ${n + 1} positions but the models' context is ${ctx.maxContextTokens}`);
    const first = request.firstPosition === 0 ? 1 : request.firstPosition;
    if (first > n) throw new InvalidRequestError("first_position", `${first} is beyond the last position ${n} of a ${n}-token sequence`);
    const spec = distributionSpecOf(request.distributions, limits, { allowNone: false });
    const lease = ctx.adapters.lease(adapterChoiceOf(request.adapter));
    try {
      const amateurSession = ctx.pair.amateur.session;
      const inSteps = lease.session.takesPromptAfterPast && amateurSession.takesPromptAfterPast;
      const [expertCache, amateurCache] = [lease.session.newCache(), amateurSession.newCache()];
      const V = ctx.vocabSize;
      try {
        for (const { from, length, reports } of scoreSteps(n, first, ctx.prefillTokens, inSteps)) {
          if (signal.aborted) throw signal.reason;
          const tokens = ids.slice(from, from + length);
          const [expert] = await lease.session.step([{ cache: expertCache, tokens, allPositions: reports, adapter: lease.adapter }]);
          const [amateur] = await amateurSession.step([{ cache: amateurCache, tokens, allPositions: reports }]);
          if (from === 0) await send({ event: { case: "started", value: { tokenIds: ids, adapterVersion: lease.version } } });
          for (let position = Math.max(first, from + 1); reports && position <= from + length; position++) {
            if (signal.aborted) throw signal.reason;
            // Row position - 1 - from of this step holds the distribution over the token at `position`.
            const row = (all: Float32Array) => all.subarray((position - 1 - from) * V, (position - from) * V);
            const distributions = await encodeStepDistributions(row(expert.positionLogProbs!), row(amateur.positionLogProbs!), spec, ctx.pairGraphs);
            await send({ event: { case: "position", value: { position, tokenId: position < n ? ids[position] : undefined, distributions } } });
          }
        }
      } finally {
        // Nothing reads these caches again (also after an abort): their positions leave the session's batch buffers now.
        expertCache.discard();
        amateurCache.discard();
      }
    } finally {
      lease.release();
    }
  } finally {
    release();
  }
}
