// Serving a protobuf-es service with grpc-js: typed handlers for the four method kinds, a
// `send` that waits when the client reads slowly (so nothing buffers without bound), an
// AbortSignal that fires when the client cancels or the deadline passes, every thrown error
// turned into a status at this one boundary (errors.ts), and the caller's credential checked
// before any handler runs (access.ts).
import type { DescMessage, DescMethod, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { create } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import * as grpc from "@grpc/grpc-js";
import type { EventEmitter } from "node:events";
import type { Readable, Writable } from "node:stream";
import { checkAccess } from "./access.ts";
import type { AccessPolicy } from "./access.ts";
import { decodedRequest, ERROR_FIELD_METADATA_KEY, methodPath, serviceDefinition } from "./definition.ts";
import type { MethodShape } from "./definition.ts";
import { GrpcError, Status, toGrpcStatus } from "./errors.ts";

/** What a handler knows about its call besides the request. */
export interface CallContext {
  /** Aborted (reason: a GrpcError CANCELLED or DEADLINE_EXCEEDED) when the call is over early. */
  readonly signal: AbortSignal;
  /** The client's request metadata. */
  readonly metadata: grpc.Metadata;
  /** The client's address. */
  readonly peer: string;
  /** The call's deadline (Infinity when none). */
  readonly deadline: grpc.Deadline;
  /** The method's path, e.g. `/lightreasoner.v1.InferenceService/Generate`. */
  readonly path: string;
  /** The client's TLS certificate, present only when the handshake verified it (mTLS). */
  readonly peerCertificate?: object;
}

/** Sends one response; resolves when the transport can take more (rejects once the call is over). */
export type Send<O extends DescMessage> = (message: MessageInitShape<O>) => Promise<void>;

type Request<M extends MethodShape> = MessageShape<M["input"]>;
type Response<M extends MethodShape> = MessageInitShape<M["output"]>;

export type UnaryHandler<M extends MethodShape> = (request: Request<M>, ctx: CallContext) => Promise<Response<M>> | Response<M>;
export type ServerStreamingHandler<M extends MethodShape> = (request: Request<M>, send: Send<M["output"]>, ctx: CallContext) => Promise<void>;
export type ClientStreamingHandler<M extends MethodShape> = (requests: AsyncIterable<Request<M>>, ctx: CallContext) => Promise<Response<M>>;
export type BidiStreamingHandler<M extends MethodShape> = (requests: AsyncIterable<Request<M>>, send: Send<M["output"]>, ctx: CallContext) => Promise<void>;

export type MethodHandler<M extends MethodShape> = M["methodKind"] extends "unary"
  ? UnaryHandler<M>
  : M["methodKind"] extends "server_streaming"
    ? ServerStreamingHandler<M>
    : M["methodKind"] extends "client_streaming"
      ? ClientStreamingHandler<M>
      : BidiStreamingHandler<M>;

/** One handler per method, keyed like the generated service's `method` (camelCase). */
export type ServiceHandlers<R extends GenServiceMethods> = { [K in keyof R]: MethodHandler<R[K]> };

/** Where unexpected errors (and, given `warn`, refused credentials) are reported; pino's logger fits. */
export interface ErrorLogger {
  error(details: Record<string, unknown>, message: string): void;
  warn?(details: Record<string, unknown>, message: string): void;
}

const consoleLogger: ErrorLogger = {
  error: (details, message) => {
    const err = details.err instanceof Error ? details.err.stack : String(details.err);
    console.error(JSON.stringify({ level: "error", msg: message, ...details, err }));
  },
};

type AnyHandler = (...args: never[]) => unknown;
type ServerCall = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerReadableStream<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>;

/**
 * Registers `handlers` for `service` on a grpc-js server. With `access`, every call must pass
 * its check before its handler runs; without, every method is open (test doubles, benches).
 */
export function addService<R extends GenServiceMethods>(server: grpc.Server, service: GenService<R>, handlers: ServiceHandlers<R>, logger: ErrorLogger = consoleLogger, access?: AccessPolicy): void {
  const implementation: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    const handler = handlers[method.localName as keyof R] as AnyHandler | undefined;
    if (typeof handler !== "function") throw new TypeError(`no handler for ${methodPath(method)}`);
    implementation[method.name] = serveMethod(method, access ? guarded(method, handler, access, logger) : handler, logger);
  }
  server.addService(serviceDefinition(service as never), implementation);
}

/** `handler` behind the access check; a refusal is thrown like any handler error, so it becomes the call's status. */
function guarded(method: DescMethod, handler: AnyHandler, access: AccessPolicy, logger: ErrorLogger): AnyHandler {
  const run = handler as (...args: unknown[]) => unknown;
  return ((...args: unknown[]) => {
    // Every handler kind takes its CallContext last.
    const ctx = args[args.length - 1] as CallContext;
    const refused = checkAccess(access, method, ctx);
    if (refused) {
      logger.warn?.({ method: ctx.path, peer: ctx.peer, code: refused.codeName }, refused.message);
      throw refused;
    }
    return run(...args);
  }) as AnyHandler;
}

function serveMethod(method: DescMethod, handler: AnyHandler, logger: ErrorLogger): grpc.UntypedHandleCall {
  const run = handler as (...args: unknown[]) => unknown;
  switch (method.methodKind) {
    case "unary":
      return (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) =>
        answerOnce(call, callback, method, logger, (ctx) => run(decodedRequest(call.request), ctx));
    case "client_streaming":
      return (call: grpc.ServerReadableStream<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) =>
        answerOnce(call, callback, method, logger, (ctx) => run(incoming(call, ctx.signal), ctx));
    case "server_streaming":
      return (call: grpc.ServerWritableStream<unknown, unknown>) => answerStream(call, method, logger, (ctx, send) => run(decodedRequest(call.request), send, ctx));
    case "bidi_streaming":
      return (call: grpc.ServerDuplexStream<unknown, unknown>) => answerStream(call, method, logger, (ctx, send) => run(incoming(call, ctx.signal), send, ctx));
  }
}

/** Unary and client-streaming calls answer once, through grpc-js's callback. */
function answerOnce(call: ServerCall, callback: grpc.sendUnaryData<unknown>, method: DescMethod, logger: ErrorLogger, body: (ctx: CallContext) => unknown): void {
  const open = openCall(call, logger);
  open.run(body).then(
    (response) => callback(null, create(method.output, response as never)),
    (err) => open.fail(err, (status) => callback(status)),
  );
}

/** Server-streaming and bidirectional calls write to the call, then end it with a status. */
function answerStream(call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>, method: DescMethod, logger: ErrorLogger, body: (ctx: CallContext, send: Send<DescMessage>) => unknown): void {
  const open = openCall(call, logger);
  const send = sender(call, method.output, open.ctx.signal);
  open.run((ctx) => body(ctx, send)).then(
    () => call.end(),
    // grpc-js turns an "error" event on a streaming call into the call's final status.
    (err) => open.fail(err, (status) => call.emit("error", status)),
  );
}

interface OpenCall {
  ctx: CallContext;
  /** Runs the handler (synchronous throws included) and settles with its result. */
  run(body: (ctx: CallContext) => unknown): Promise<unknown>;
  /** Reports a handler's error as the call's status, unless the call is already over. */
  fail(err: unknown, reply: (status: Partial<grpc.StatusObject>) => void): void;
}

/** How close to the deadline a cancellation counts as the deadline passing. */
const DEADLINE_SKEW_MS = 250;

function openCall(call: ServerCall, logger: ErrorLogger): OpenCall {
  const controller = new AbortController();
  const events = call as EventEmitter;
  const path = call.getPath();
  const onCancelled = () => {
    const deadline = call.getDeadline();
    // The client resets the stream at ITS deadline, which arrives a little before the
    // server's copy (computed from the grpc-timeout header on receipt) runs out.
    const expired = deadline !== Infinity && new Date(deadline).getTime() <= Date.now() + DEADLINE_SKEW_MS;
    controller.abort(expired ? new GrpcError(Status.DEADLINE_EXCEEDED, "deadline exceeded") : new GrpcError(Status.CANCELLED, "cancelled by the client"));
  };
  events.once("cancelled", onCancelled);
  const ctx: CallContext = { signal: controller.signal, metadata: call.metadata, peer: call.getPeer(), deadline: call.getDeadline(), path, peerCertificate: call.getAuthContext().sslPeerCertificate };
  return {
    ctx,
    async run(body) {
      try {
        return await body(ctx);
      } finally {
        // grpc-js emits "cancelled" after every call, finished or not: only report it while running.
        events.off("cancelled", onCancelled);
      }
    },
    fail(err, reply) {
      // Once the client is gone there is nobody to tell, and the handler's abort error is expected.
      if (controller.signal.aborted) return;
      const status = toGrpcStatus(err);
      if (status.internal) logger.error({ method: path, err }, status.message);
      const metadata = new grpc.Metadata();
      if (status.field) metadata.set(ERROR_FIELD_METADATA_KEY, status.field);
      reply({ code: status.code, details: status.internal ? `internal error in ${path}` : status.message, metadata });
    },
  };
}

/**
 * The client's messages; ends at half-close, throws the abort reason if the call is cancelled
 * first. A Node client half-closes before it resets a stream it cancels, so a request stream
 * can end normally just before the cancellation arrives: a handler that needs a complete
 * upload checks completeness itself (UploadAdapter declares its size for this reason).
 */
async function* incoming(stream: Readable, signal: AbortSignal): AsyncGenerator<never> {
  // grpc-js only reports a cancellation; make sure a reader waiting for a message wakes too.
  const onAbort = () => stream.destroy();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    // A handler that stops reading early must not destroy the stream: its response side lives on.
    for await (const message of stream.iterator({ destroyOnReturn: false })) yield decodedRequest(message) as never;
  } catch (err) {
    throw signal.aborted ? signal.reason : err;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
  if (signal.aborted) throw signal.reason;
}

/**
 * Sends are queued behind one another: a handler serving many interleaved streams (the
 * trajectory call) may have several in flight, and each must wait for the transport behind
 * the earlier ones rather than each waiting on its own "drain" listener.
 */
function sender<O extends DescMessage>(stream: Writable, schema: O, signal: AbortSignal): Send<O> {
  let queue: Promise<void> = Promise.resolve();
  return (message) => {
    const sent = queue.then(async () => {
      if (signal.aborted) throw signal.reason;
      if (stream.write(create(schema, message))) return;
      await drained(stream, signal);
    });
    queue = sent.catch(() => undefined);
    return sent;
  };
}

/** Resolves on the stream's next "drain"; rejects with the abort reason if the call ends first. */
function drained(stream: Writable, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const finish = (err?: unknown) => {
      stream.off("drain", onDrain);
      signal.removeEventListener("abort", onAbort);
      if (err === undefined) resolve();
      else reject(err);
    };
    const onDrain = () => finish();
    const onAbort = () => finish(signal.reason);
    stream.once("drain", onDrain);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
