// StreamTrajectories: many trajectories over one bidirectional call, the trainer's feed.
// Each start becomes one lockstep sequence in the scheduler (the expert writes, both models'
// distributions are reported); their messages interleave on the call as the batch advances.
// A sequence whose last message the transport has not taken yet sits out the next steps
// (back-pressure), so the call's buffer holds at most one message per open trajectory.
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { BidiStreamingHandler, Send } from "#core/grpc/adapter.ts";
import { FinishReason } from "#core/gen/lightreasoner/v1/common_pb.ts";
import type { InferenceService, StreamTrajectoriesRequest, StreamTrajectoriesResponseSchema, TrajectoryRequest } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { CapacityError, InvalidRequestError, ShuttingDownError } from "#inference/engine/errors.ts";
import type { SequenceHandle } from "#inference/engine/scheduler.ts";
import type { ServingContext } from "./context.ts";
import { admitCall, completionEndOf } from "./context.ts";
import { encodeStepDistributions } from "./distributions.ts";
import { adapterChoiceOf, distributionSpecOf, encodePrompt, samplingOf } from "./request.ts";
import { requestStatus } from "./status.ts";

type Response = MessageInitShape<typeof StreamTrajectoriesResponseSchema>;
type Handler = BidiStreamingHandler<(typeof InferenceService)["method"]["streamTrajectories"]>;

const MAX_REQUEST_ID_LENGTH = 128;
const DRAINED = Symbol("drained");

interface OpenTrajectory {
  handle: SequenceHandle | null;
  /** Resolves once the trajectory's last message was handed to the call. */
  done: Promise<void>;
}

interface Outbox {
  /** Sends on the call; false (never a rejection) once the call is over. */
  post(message: Response): Promise<boolean>;
  /** Resolves when every message posted so far was handed to the call: the call may end after it. */
  flushed(): Promise<void>;
}

function outbox(send: Send<typeof StreamTrajectoriesResponseSchema>): Outbox {
  const pending = new Set<Promise<boolean>>();
  return {
    post(message) {
      const sent = send(message).then(
        () => true,
        () => false,
      );
      pending.add(sent);
      void sent.then(() => pending.delete(sent));
      return sent;
    },
    async flushed() {
      while (pending.size > 0) await Promise.all(pending);
    },
  };
}

export function streamTrajectoriesHandler(ctx: ServingContext): Handler {
  return async (requests, send, call) => {
    const release = admitCall(ctx);
    const messages = outbox(send);
    const post = messages.post;
    const open = new Map<string, OpenTrajectory>();
    let idleCheck = () => {};
    // Resolves when the server is draining and this call has nothing left running.
    const drainedIdle = new Promise<typeof DRAINED>((resolve) => {
      idleCheck = () => {
        if (ctx.draining.aborted && open.size === 0) resolve(DRAINED);
      };
      ctx.draining.addEventListener("abort", idleCheck, { once: true });
    });
    const cancelAll = () => {
      for (const t of open.values()) t.handle?.cancel();
    };
    call.signal.addEventListener("abort", cancelAll, { once: true });
    try {
      const iterator = requests[Symbol.asyncIterator]();
      for (;;) {
        const next = iterator.next();
        // An abandoned read must not surface as an unhandled rejection when the call ends.
        next.catch(() => {});
        const result = await Promise.race([next, drainedIdle]);
        if (result === DRAINED) throw new ShuttingDownError("the server is shutting down; open a new call on another replica for more trajectories");
        if (result.done) break;
        const request = result.value as StreamTrajectoriesRequest;
        const id = request.requestId;
        if (id.length === 0) throw new InvalidRequestError("request_id", "must not be empty");
        if (id.length > MAX_REQUEST_ID_LENGTH) throw new InvalidRequestError("request_id", `has ${id.length} characters, above the limit of ${MAX_REQUEST_ID_LENGTH}`);
        switch (request.action.case) {
          case "start": {
            if (open.has(id)) throw new InvalidRequestError("request_id", `${JSON.stringify(id)} is already in use by an unfinished trajectory of this call`);
            const trajectory = startTrajectory(ctx, id, request.action.value, post, open.size, () => {
              open.delete(id);
              idleCheck();
            });
            if (trajectory) open.set(id, trajectory);
            break;
          }
          case "cancel":
            open.get(id)?.handle?.cancel();
            break;
          default:
            throw new InvalidRequestError("action", "exactly one of start or cancel must be set");
        }
      }
      // Half-closed by the client: finish what is open, hand over every message (refusals
      // included), then end the call with OK.
      await Promise.all([...open.values()].map((t) => t.done));
      await messages.flushed();
    } catch (err) {
      cancelAll();
      await Promise.all([...open.values()].map((t) => t.done));
      throw err;
    } finally {
      call.signal.removeEventListener("abort", cancelAll);
      ctx.draining.removeEventListener("abort", idleCheck);
      release();
    }
  };
}

/**
 * Validates and submits one trajectory. A refused one gets its finished message (with the
 * RequestError) right away and returns null; an admitted one reports through the scheduler.
 */
function startTrajectory(ctx: ServingContext, id: string, start: TrajectoryRequest, post: (m: Response) => Promise<boolean>, alreadyOpen: number, onClosed: () => void): OpenTrajectory | null {
  const { scheduler, metrics, pair, logger } = ctx;
  let prompt;
  let sampling;
  let spec;
  let adapter;
  try {
    if (alreadyOpen >= ctx.limits.maxTrajectoriesPerStream) {
      throw new CapacityError(`request_id: this call already holds ${alreadyOpen} unfinished trajectories (limit ${ctx.limits.maxTrajectoriesPerStream})`, "request_id");
    }
    prompt = encodePrompt(start.prompt, { tokenizer: pair.expert.tokenizer, vocabSize: ctx.vocabSize, maxTokens: ctx.limits.maxPromptTokens });
    sampling = samplingOf(start.sampling, ctx.limits);
    spec = distributionSpecOf(start.distributions, ctx.limits, { allowNone: true });
    adapter = adapterChoiceOf(start.adapter);
  } catch (err) {
    refuse(ctx, id, err, post);
    return null;
  }
  const encoding = spec.encoding;
  let resolveDone = () => {};
  const done = new Promise<void>((resolve) => (resolveDone = resolve));
  const trajectory: OpenTrajectory = { handle: null, done };
  // The last step's message, encoded (off the tick: SPARSE runs on ONNX Runtime) and posted;
  // the finished message waits for it, so the call carries them in order.
  let lastStep: Promise<unknown> = Promise.resolve();
  // A step that could not be encoded ends the trajectory with that error instead of "cancelled".
  let encodingError: Error | undefined;
  try {
    trajectory.handle = scheduler.submit(
      {
        // Without distributions the amateur has nothing to contribute; the expert's tokens are the same.
        mode: encoding === "none" ? "expert" : "lockstep",
        promptIds: prompt.ids,
        ...sampling,
        alpha: 1,
        skipSpecialTokens: false,
        adapter,
      },
      {
        onStart: ({ adapterVersion, seed }) => {
          void post({ requestId: id, event: { case: "started", value: { promptTokenIds: prompt.ids, promptText: prompt.text, adapterVersion, seed } } });
        },
        onStep: (e) => {
          metrics.tokensStreamed.inc({ mode: "trajectory" });
          metrics.stepsStreamed.inc({ encoding });
          const { step, position, tokenId, text, adapterVersion } = e;
          lastStep = encodeStepDistributions(e.logpExpert!, e.logpAmateur!, spec, ctx.pairGraphs).then(
            (distributions) =>
              post({ requestId: id, event: { case: "step", value: { step, tokenText: text, adapterVersion, scored: { position, tokenId, distributions } } } }).then((taken) =>
                taken ? trajectory.handle?.resume() : trajectory.handle?.cancel(),
              ),
            (err: Error) => {
              encodingError = err;
              trajectory.handle?.cancel();
            },
          );
          // Sit out steps until the transport has taken this one.
          return false;
        },
        onFinish: (finish) => {
          onClosed();
          // After the last step's message: its encoding may still fail and turn this into an error.
          const finished = lastStep.then(() => {
            const f = encodingError ? { ...finish, reason: "error" as const, error: encodingError } : finish;
            let error;
            if (f.reason === "error") {
              const status = requestStatus(f.error);
              if (status.internal) logger.error({ err: f.error, requestId: id }, "trajectory failed");
              metrics.errors.inc({ code: status.codeName });
              error = { code: status.code, message: status.message, field: status.field };
            }
            return post({ requestId: id, event: { case: "finished", value: { end: completionEndOf(f), error, completionText: f.completionText } } });
          });
          void finished.then(() => resolveDone());
        },
      },
    );
  } catch (err) {
    refuse(ctx, id, err, post);
    return null;
  }
  return trajectory;
}

/** A trajectory refused before it started: only its finished message, with the reason. */
function refuse(ctx: ServingContext, id: string, err: unknown, post: (m: Response) => Promise<boolean>): void {
  const status = requestStatus(err);
  if (status.internal) ctx.logger.error({ err, requestId: id }, "trajectory refused by an internal error");
  ctx.metrics.errors.inc({ code: status.codeName });
  void post({
    requestId: id,
    event: {
      case: "finished",
      value: { end: { finishReason: FinishReason.ERROR, usage: {}, timings: {} }, error: { code: status.code, message: status.message, field: status.field } },
    },
  });
}
