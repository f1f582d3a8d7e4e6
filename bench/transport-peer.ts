// The server half of the transport section, run as its own process (`lightreasoner
// bench-worker transport-peer`): a real gRPC server with the InferenceService contract whose
// StreamTrajectories streams one step message per requested token, the step's distributions
// encoded once by the service's own encoder (FULL float32, FULL float16 or SPARSE), and a
// plain TCP server that writes the very same serialized bytes, length-prefixed, as fast as
// the socket takes them. Only the wire differs between the two. Between them, to say which
// layer the time goes to: a bench-only gRPC method streaming the same pre-serialized bytes
// with identity codecs on both ends (HTTP/2 and grpc-js, no protobuf), and a plain Node
// HTTP/2 server writing the TCP frames on one stream (HTTP/2 alone, no grpc-js).
import { create } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { createServer as createHttp2Server } from "node:http2";
import type { Http2Server } from "node:http2";
import { createServer } from "node:net";
import type { Server, Socket } from "node:net";
import { addService, GrpcError, Status } from "#core/grpc/adapter.ts";
import { serializeMessage } from "#core/grpc/message-encoding.ts";
import { DistributionEncoding, FinishReason, FloatDtype } from "#core/gen/lightreasoner/v1/common_pb.ts";
import type { DistributionRequest, DistributionRequestSchema } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { InferenceService, StreamTrajectoriesResponseSchema } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import type { StreamTrajectoriesRequest } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { encodeDistributions } from "#inference/server/distributions.ts";
import type { DistributionSpec } from "#inference/server/request.ts";
import { syntheticStep } from "./distributions.ts";

export const TRANSPORT_ENCODINGS = ["full32", "full16", "sparse"] as const;
export type TransportEncoding = (typeof TRANSPORT_ENCODINGS)[number];

export interface TransportPeerInput {
  vocabSize: number;
  alpha: number;
  topK: number;
}

/** The bench-only server-streaming method: its request is JSON `{encoding, steps}`, its responses raw step bytes. */
export const RAW_STREAM_PATH = "/lightreasoner.bench.v1.TransportPeer/StreamBytes";

export interface RawStreamRequest {
  encoding: TransportEncoding;
  steps: number;
}

const identity = (bytes: Buffer) => bytes;

export const RAW_STREAM_DEFINITION: grpc.ServiceDefinition = {
  streamBytes: {
    path: RAW_STREAM_PATH,
    requestStream: false,
    responseStream: true,
    requestSerialize: (request: RawStreamRequest) => Buffer.from(JSON.stringify(request)),
    requestDeserialize: (bytes: Buffer) => JSON.parse(bytes.toString()) as RawStreamRequest,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

export interface TransportPeerReady {
  grpcPort: number;
  tcpPort: number;
  /** Plain HTTP/2: GET /<encoding>/<steps> answers with the TCP frames as the body of one stream. */
  http2Port: number;
  /** Serialized StreamTrajectoriesResponse bytes of one step, per encoding. */
  messageBytes: Record<TransportEncoding, number>;
}

type Response = MessageInitShape<typeof StreamTrajectoriesResponseSchema>;

export function specOf(encoding: TransportEncoding, alpha: number, topK: number): DistributionSpec {
  if (encoding === "sparse") return { encoding: "sparse", alpha, topK };
  return { encoding: "full", dtype: encoding === "full32" ? "float32" : "float16" };
}

/** What a client asks for to get `encoding`. */
export function requestOf(encoding: TransportEncoding, alpha: number, topK: number): MessageInitShape<typeof DistributionRequestSchema> {
  if (encoding === "sparse") return { encoding: DistributionEncoding.SPARSE, alpha, topK };
  return { encoding: DistributionEncoding.FULL, dtype: encoding === "full32" ? FloatDtype.FLOAT32 : FloatDtype.FLOAT16 };
}

function encodingOf(request: DistributionRequest | undefined): TransportEncoding {
  if (request?.encoding === DistributionEncoding.SPARSE) return "sparse";
  if (request?.encoding === DistributionEncoding.FULL) return request.dtype === FloatDtype.FLOAT16 ? "full16" : "full32";
  throw new GrpcError(Status.INVALID_ARGUMENT, "distributions.encoding: the transport peer streams FULL or SPARSE", "distributions.encoding");
}

/** One step message per encoding, from one synthetic step at the given vocabulary. */
export function stepMessages(input: TransportPeerInput): Record<TransportEncoding, Response> {
  const { logpExpert, logpAmateur } = syntheticStep(input.vocabSize, 3);
  const message = (encoding: TransportEncoding): Response => ({
    requestId: "t0",
    event: {
      case: "step",
      value: { step: 0, tokenText: " the", scored: { position: 64, tokenId: 1234, distributions: encodeDistributions(logpExpert, logpAmateur, specOf(encoding, input.alpha, input.topK)) } },
    },
  });
  return { full32: message("full32"), full16: message("full16"), sparse: message("sparse") };
}

const unimplemented = () => {
  throw new GrpcError(Status.UNIMPLEMENTED, "the transport peer serves StreamTrajectories only");
};

function grpcPeer(messages: Record<TransportEncoding, Response>): grpc.Server {
  const server = new grpc.Server({ "grpc.max_send_message_length": 64 << 20, "grpc.max_receive_message_length": 64 << 20 });
  addService(server, InferenceService, {
    streamTrajectories: async (requests, send) => {
      for await (const request of requests as AsyncIterable<StreamTrajectoriesRequest>) {
        if (request.action.case !== "start") continue;
        const start = request.action.value;
        const step = messages[encodingOf(start.distributions)];
        const count = start.sampling?.maxNewTokens ?? 1;
        await send({ requestId: request.requestId, event: { case: "started", value: { promptTokenIds: [1], promptText: "", adapterVersion: "", seed: 0 } } });
        for (let i = 0; i < count; i++) await send({ ...step, requestId: request.requestId });
        await send({ requestId: request.requestId, event: { case: "finished", value: { end: { finishReason: FinishReason.LENGTH, usage: {}, timings: {} } } } });
      }
    },
    generate: unimplemented,
    score: unimplemented,
    getModelInfo: unimplemented,
  });
  return server;
}

/** Serialized step bytes per encoding as the service's serializer writes them: what the TCP socket and the raw gRPC method send. */
function serializedSteps(messages: Record<TransportEncoding, Response>): Record<TransportEncoding, Uint8Array> {
  return Object.fromEntries(TRANSPORT_ENCODINGS.map((e) => [e, serializeMessage(StreamTrajectoriesResponseSchema, create(StreamTrajectoriesResponseSchema, messages[e]))])) as Record<TransportEncoding, Uint8Array>;
}

/** Streams `steps` copies of the pre-serialized step, waiting for "drain" as the adapter's sender does. */
function rawStreamHandler(steps: Record<TransportEncoding, Uint8Array>) {
  return (call: grpc.ServerWritableStream<RawStreamRequest, Buffer>) => {
    const bytes = steps[call.request.encoding];
    if (!bytes || !Number.isInteger(call.request.steps) || call.request.steps < 0 || call.request.steps > 1_000_000) {
      call.emit("error", { code: grpc.status.INVALID_ARGUMENT, details: "request: encoding must be full32, full16 or sparse and steps an integer in [0, 1000000]" });
      return;
    }
    const message = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let left = call.request.steps;
    const pump = () => {
      while (left > 0) {
        left--;
        if (!call.write(message)) return void call.once("drain", pump);
      }
      call.end();
    };
    pump();
  };
}

/** Answers "<encoding> <count>\n" with `count` frames of [uint32 LE length][step message bytes]. */
/** [uint32 LE length][step message bytes] per encoding: what the TCP and plain HTTP/2 peers send per step. */
function lengthPrefixed(steps: Record<TransportEncoding, Uint8Array>): Record<TransportEncoding, Buffer> {
  return Object.fromEntries(
    TRANSPORT_ENCODINGS.map((encoding) => {
      const bytes = steps[encoding];
      const frame = Buffer.alloc(4 + bytes.length);
      frame.writeUInt32LE(bytes.length, 0);
      frame.set(bytes, 4);
      return [encoding, frame];
    }),
  ) as Record<TransportEncoding, Buffer>;
}

function tcpPeer(frames: Record<TransportEncoding, Buffer>): Server {
  return createServer((socket: Socket) => {
    let line = "";
    const onData = (chunk: Buffer) => {
      line += chunk.toString();
      if (!line.includes("\n")) return;
      socket.off("data", onData);
      const [encoding, countText] = line.trim().split(" ");
      const frame = frames[encoding as TransportEncoding];
      if (!frame) return socket.destroy();
      let left = Number(countText);
      const pump = () => {
        while (left > 0) {
          left--;
          if (!socket.write(frame)) return void socket.once("drain", pump);
        }
        socket.end();
      };
      pump();
    };
    socket.on("data", onData);
    socket.on("error", () => socket.destroy());
  });
}

/** The same frames as the TCP socket, as the body of one HTTP/2 stream, written with backpressure. */
function http2Peer(frames: Record<TransportEncoding, Buffer>): Http2Server {
  const server = createHttp2Server();
  server.on("stream", (stream, headers) => {
    const [, encoding, countText] = String(headers[":path"] ?? "").split("/");
    const frame = frames[encoding as TransportEncoding];
    const count = Number(countText);
    if (!frame || !Number.isInteger(count) || count < 0 || count > 1_000_000) {
      stream.respond({ ":status": 400 });
      return void stream.end("path: /<full32|full16|sparse>/<steps up to 1000000>");
    }
    stream.respond({ ":status": 200 });
    let left = count;
    const pump = () => {
      while (left > 0) {
        left--;
        if (!stream.write(frame)) return void stream.once("drain", pump);
      }
      stream.end();
    };
    pump();
  });
  server.on("sessionError", () => {});
  return server;
}

/** Starts both servers on loopback, prints the ready line, and serves until SIGTERM. */
export async function runTransportPeer(input: TransportPeerInput, print: (line: unknown) => void): Promise<void> {
  const messages = stepMessages(input);
  const server = grpcPeer(messages);
  const steps = serializedSteps(messages);
  server.addService(RAW_STREAM_DEFINITION, { streamBytes: rawStreamHandler(steps) });
  const grpcPort = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
  const frames = lengthPrefixed(steps);
  const tcp = tcpPeer(frames);
  const http2 = http2Peer(frames);
  const http2Port = await new Promise<number>((resolve) => http2.listen(0, "127.0.0.1", () => resolve((http2.address() as { port: number }).port)));
  const tcpPort = await new Promise<number>((resolve) => tcp.listen(0, "127.0.0.1", () => resolve((tcp.address() as { port: number }).port)));
  const messageBytes = Object.fromEntries(TRANSPORT_ENCODINGS.map((e) => [e, steps[e].length])) as Record<TransportEncoding, number>;
  const ready: TransportPeerReady = { grpcPort, tcpPort, http2Port, messageBytes };
  print({ ready });
  await new Promise<void>((resolve) => process.once("SIGTERM", () => resolve()));
  server.forceShutdown();
  await new Promise<void>((resolve) => tcp.close(() => resolve()));
  http2.close();
}
