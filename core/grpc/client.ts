// Calling a protobuf-es service through grpc-js: a typed client with one function per
// method. Unary calls are promises, server streams async iterables, client streams and
// bidirectional streams objects with a `write` that waits for the transport (back-pressure).
// Every failure surfaces as a GrpcError carrying the status code.
import type { DescMessage, DescMethod, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { create } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import * as grpc from "@grpc/grpc-js";
import type { EventEmitter } from "node:events";
import type { Readable, Writable } from "node:stream";
import { ERROR_FIELD_METADATA_KEY, methodDefinition } from "./definition.ts";
import type { MethodShape } from "./definition.ts";
import { GrpcError, Status } from "./errors.ts";
import { clientTransport } from "./transport-security.ts";
import type { ClientSecurity } from "./transport-security.ts";

export interface CallOptions {
  /** Fails the call with DEADLINE_EXCEEDED after this many milliseconds. */
  timeoutMs?: number;
  /** Cancels the call (status CANCELLED) when aborted. */
  signal?: AbortSignal;
  /** Request metadata. */
  metadata?: grpc.Metadata;
}

export interface ClientStreamingCall<I extends DescMessage, O extends DescMessage> {
  /** Sends one request; resolves when the transport can take more. */
  write(message: MessageInitShape<I>): Promise<void>;
  /** Half-closes the call and resolves with the response. */
  end(): Promise<MessageShape<O>>;
  cancel(): void;
}

export interface BidiStreamingCall<I extends DescMessage, O extends DescMessage> extends AsyncIterable<MessageShape<O>> {
  /** Sends one request; resolves when the transport can take more. */
  write(message: MessageInitShape<I>): Promise<void>;
  /** Half-closes the request side; responses keep arriving until the server ends the call. */
  end(): void;
  cancel(): void;
}

export type ClientMethod<M extends MethodShape> = M["methodKind"] extends "unary"
  ? (request: MessageInitShape<M["input"]>, options?: CallOptions) => Promise<MessageShape<M["output"]>>
  : M["methodKind"] extends "server_streaming"
    ? (request: MessageInitShape<M["input"]>, options?: CallOptions) => AsyncIterable<MessageShape<M["output"]>>
    : M["methodKind"] extends "client_streaming"
      ? (options?: CallOptions) => ClientStreamingCall<M["input"], M["output"]>
      : (options?: CallOptions) => BidiStreamingCall<M["input"], M["output"]>;

/** One function per method (camelCase names, as in the generated service), plus `close`. */
export type ServiceClient<R extends GenServiceMethods> = { readonly [K in keyof R]: ClientMethod<R[K]> } & {
  /** The underlying grpc-js client; pass it to createClient to share the connection. */
  readonly channel: grpc.Client;
  /** Closes the connection (also for every client sharing it). */
  close(): void;
};

export interface ClientOptions {
  /** TLS and the bearer token (default: plain-text HTTP/2 without a token, as on loopback). */
  security?: ClientSecurity;
  channelOptions?: grpc.ChannelOptions;
}

/** A typed client for `service` at `target` ("host:port"), or on an existing client's connection. */
export function createClient<R extends GenServiceMethods>(service: GenService<R>, target: string | grpc.Client, options: ClientOptions = {}): ServiceClient<R> {
  const channel = typeof target === "string" ? openChannel(target, options) : target;
  const client: Record<string, unknown> = { channel, close: () => channel.close() };
  for (const method of (service as unknown as { methods: DescMethod[] }).methods) {
    client[method.localName] = callMethod(channel, method);
  }
  return client as ServiceClient<R>;
}

/**
 * The HTTP/2 receive window the project's clients open, per call and per connection. grpc-js
 * leaves it at 64 KiB, where a FULL float32 step (1.2 MB at vocabulary 151,936) waits on about
 * twenty window updates: over loopback such a stream ran at 16.8% of a raw TCP socket with
 * grpc-js's window and 38.3% with this one (`npm run bench -- --only transport`). It is also
 * the most a server sends ahead of a reader that stopped reading a call. channelOptions
 * `grpc-node.flow_control_window` overrides it.
 */
export const CLIENT_FLOW_CONTROL_WINDOW_BYTES = 8 << 20;

function openChannel(target: string, options: ClientOptions): grpc.Client {
  const { credentials, interceptors } = clientTransport(options.security);
  return new grpc.Client(target, credentials, { "grpc-node.flow_control_window": CLIENT_FLOW_CONTROL_WINDOW_BYTES, ...options.channelOptions, interceptors });
}

function callMethod(channel: grpc.Client, method: DescMethod): (...args: never[]) => unknown {
  const { path, requestSerialize, responseDeserialize } = methodDefinition(method);
  const request = (message: unknown) => create(method.input, message as never);
  const metadata = (options: CallOptions) => options.metadata ?? new grpc.Metadata();
  switch (method.methodKind) {
    case "unary":
      return (message: unknown, options: CallOptions = {}) =>
        new Promise((resolve, reject) => {
          const call = channel.makeUnaryRequest(path, requestSerialize, responseDeserialize, request(message), metadata(options), callOptions(options), (err, response) =>
            err ? reject(toGrpcError(err)) : resolve(response),
          );
          watch(call, options.signal);
        });
    case "server_streaming":
      return (message: unknown, options: CallOptions = {}) => ({
        [Symbol.asyncIterator]: () => {
          const call = channel.makeServerStreamRequest(path, requestSerialize, responseDeserialize, request(message), metadata(options), callOptions(options));
          return responses(call, watch(call, options.signal));
        },
      });
    case "client_streaming":
      return (options: CallOptions = {}) => {
        let call!: grpc.ClientWritableStream<unknown>;
        const response = new Promise((resolve, reject) => {
          call = channel.makeClientStreamRequest(path, requestSerialize, responseDeserialize, metadata(options), callOptions(options), (err, value) =>
            err ? reject(toGrpcError(err)) : resolve(value),
          );
        });
        // A failure before end() is reported by end(), not as an unhandled rejection.
        response.catch(() => {});
        watch(call, options.signal);
        return {
          write: (message: unknown) => write(call, request(message)),
          end: () => {
            call.end();
            return response;
          },
          cancel: () => call.cancel(),
        };
      };
    case "bidi_streaming":
      return (options: CallOptions = {}) => {
        const call = channel.makeBidiStreamRequest(path, requestSerialize, responseDeserialize, metadata(options), callOptions(options));
        const failure = watch(call, options.signal);
        return {
          write: (message: unknown) => write(call, request(message)),
          end: () => call.end(),
          cancel: () => call.cancel(),
          [Symbol.asyncIterator]: () => responses(call, failure),
        };
      };
  }
}

function callOptions(options: CallOptions): grpc.CallOptions {
  return options.timeoutMs === undefined ? {} : { deadline: Date.now() + options.timeoutMs };
}

type ClientCall = EventEmitter & { cancel(): void };

/**
 * Ties a call to the caller's signal until its status arrives, and keeps the "error" event a
 * failed stream emits (possibly before anyone reads) so it is neither lost nor unhandled.
 */
function watch(call: ClientCall, signal: AbortSignal | undefined): { error: unknown } {
  const failure = { error: null as unknown };
  call.on("error", (err: unknown) => (failure.error ??= err));
  if (!signal) return failure;
  const cancel = () => call.cancel();
  if (signal.aborted) queueMicrotask(cancel);
  else {
    signal.addEventListener("abort", cancel, { once: true });
    call.once("status", () => signal.removeEventListener("abort", cancel));
  }
  return failure;
}

/** The messages of a response stream; throws the call's status as a GrpcError when not OK. */
async function* responses<O>(call: Readable & { cancel(): void }, failure: { error: unknown }): AsyncGenerator<O> {
  let complete = false;
  try {
    for await (const message of call.iterator({ destroyOnReturn: false })) yield message as O;
    complete = true;
  } catch (err) {
    complete = true;
    throw toGrpcError(err);
  } finally {
    // The caller stopped reading early: the server should stop too.
    if (!complete) call.cancel();
  }
  if (failure.error) throw toGrpcError(failure.error);
}

/** Writes one message, waiting for "drain" when the stream's buffer is full. */
function write(stream: Writable, message: unknown): Promise<void> {
  if (stream.writableEnded || stream.destroyed) return Promise.reject(new GrpcError(Status.FAILED_PRECONDITION, "write after the request stream was ended"));
  if (stream.write(message)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const finish = (err?: unknown) => {
      stream.off("drain", onDrain);
      stream.off("status", onStatus);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => finish();
    // The call ended while this write waited: nothing will drain any more.
    const onStatus = (status: grpc.StatusObject) => finish(status.code === Status.OK ? undefined : new GrpcError(status.code, status.details));
    stream.once("drain", onDrain);
    stream.once("status", onStatus);
  });
}

/** A status received from the server (grpc-js ServiceError) as a GrpcError. */
export function toGrpcError(err: unknown): GrpcError {
  if (err instanceof GrpcError) return err;
  const { code, details, metadata } = err as Partial<grpc.ServiceError>;
  if (typeof code !== "number") return new GrpcError(Status.UNKNOWN, err instanceof Error ? err.message : String(err));
  const field = metadata?.get(ERROR_FIELD_METADATA_KEY)[0];
  return new GrpcError(code, details ?? "", typeof field === "string" ? field : "");
}
