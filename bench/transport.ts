// Section "transport": how many step messages per second the gRPC stream carries on loopback
// for FULL float32, FULL float16 and SPARSE at a 151,936-token vocabulary, next to a raw TCP
// socket carrying the same serialized bytes between the same two processes; plus what it costs
// the server to produce one step's message (the service's encoder, then protobuf), since that
// is paid on the serving thread before the wire sees a byte. To say where gRPC's time goes,
// the same steps also travel as pre-serialized bytes over a bench-only gRPC method with
// identity codecs (HTTP/2 and grpc-js alone, no protobuf), with the client's default 64 KiB
// flow-control window and with a wide one, and the per-message CPU work (protobuf
// serialization, grpc-js's length-prefix copy, protobuf parsing) is timed in isolation.
// Every transport variant runs once per repeat, in turn, so a busy moment hits them all, and
// the share of TCP is also given per repeat (its spread says how stable the figure is).
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { connect as connectHttp2 } from "node:http2";
import { connect } from "node:net";
import { CLIENT_FLOW_CONTROL_WINDOW_BYTES, createClient } from "#core/grpc/adapter.ts";
import { serializeMessage } from "#core/grpc/message-encoding.ts";
import { FinishReason } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { InferenceService, StreamTrajectoriesResponseSchema } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { PairSummaryGraph } from "#inference/model/pair-summary-graph.ts";
import { encodeStepDistributions } from "#inference/server/distributions.ts";
import { syntheticStep } from "./distributions.ts";
import { BenchProcessError, liveThreadsCpuSeconds, spawnCli, stopChild } from "./processes.ts";
import type { BenchSettings } from "./settings.ts";
import type { Measured } from "./stats.ts";
import { measured, ratio, repeat } from "./stats.ts";
import type { TransportEncoding, TransportPeerInput, TransportPeerReady } from "./transport-peer.ts";
import { RAW_STREAM_DEFINITION, TRANSPORT_ENCODINGS, requestOf, specOf, stepMessages } from "./transport-peer.ts";

export interface TransportRow {
  encoding: TransportEncoding;
  /** Serialized StreamTrajectoriesResponse of one step (gRPC adds a 5-byte prefix, TCP here a 4-byte one). */
  bytesPerStep: number;
  stepsPerRun: number;
  grpcStepsPerSecond: Measured;
  /** The same stream at the window the project's clients open (WIDE_WINDOW_BYTES) instead of grpc-js's 64 KiB. */
  grpcWideWindowStepsPerSecond: Measured;
  tcpStepsPerSecond: Measured;
  /** The TCP frames as the body of one plain HTTP/2 stream (Node's http2, no grpc-js), default and wide window. */
  http2StepsPerSecond: Measured;
  http2WideWindowStepsPerSecond: Measured;
  /** Pre-serialized bytes over gRPC with identity codecs: HTTP/2 + grpc-js, no protobuf. */
  rawGrpcStepsPerSecond: Measured;
  rawGrpcWideWindowStepsPerSecond: Measured;
  /** gRPC over raw TCP: the share of the socket's rate the gRPC stream keeps (ratio of medians). */
  grpcOverTcp: number | null;
  grpcWideWindowOverTcp: number | null;
  /** The same share within each repeat (gRPC and TCP run back to back), so its spread shows stability. */
  grpcOverTcpPerRepeat: Measured;
  grpcWideWindowOverTcpPerRepeat: Measured;
  /** Server-side cost of one step before the wire: the service's encoder (encodeStepDistributions) + serialization. */
  encodeMsPerStep: Measured;
  /** Per-message CPU work timed alone in this process: the service's serialization of the built message (serializeMessage), grpc-js's 5-byte-prefix copy, protobuf parsing. */
  serializeMsPerStep: Measured;
  /** The same message through protobuf-es's toBinary, the naive way serializeMessage replaces. */
  toBinaryMsPerStep: Measured;
  frameCopyMsPerStep: Measured;
  parseMsPerStep: Measured;
  /** Where a step's time goes, in ms per step, from the medians above (see breakdown()). */
  breakdown: TransportBreakdown;
  /** CPU milliseconds per step of both processes together (server and client, every thread), per variant. */
  cpuMsPerStep: Record<keyof VariantMs, Measured>;
  /**
   * The same layers in CPU time, from the least of each variant's repeats: a disturbed repeat
   * (a neighbour on the host, a collection) only ever adds CPU time to the same work, so the
   * least is the work itself; the totals repeat across runs where the rates do not, the single
   * layers (differences of minima from different repeats) less so.
   */
  cpuBreakdown: TransportBreakdown;
}

/** Per-step cost of each variant the breakdown compares, in milliseconds (wall time from a rate, or CPU time). */
export interface VariantMs {
  tcp: number;
  http2Wide: number;
  rawGrpcWide: number;
  grpcWide: number;
  grpc: number;
}

/**
 * Differences of measured per-step costs, each the cost one layer adds over the one below
 * it, all at the project's client window: the raw socket, then plain HTTP/2, then grpc-js,
 * then protobuf on top (the project's adapter), which sum to the project's client; beside
 * them, what grpc-js's own 64 KiB window would add to that (the naive client). The same
 * differences serve for wall time (1 / rate: server and client overlap in time, so a layer's
 * wall cost need not equal its CPU work) and for CPU time of both processes (which counts all
 * the work, overlapped or not); a negative difference means the layer cost less than the noise.
 */
export interface TransportBreakdown {
  tcpMs: number;
  http2Ms: number;
  grpcJsMs: number;
  protobufMs: number;
  /** A step through the project's client: tcpMs + http2Ms + grpcJsMs + protobufMs. */
  clientMs: number;
  /** A step at grpc-js's default window, less clientMs. */
  defaultWindowMs: number;
}

export function breakdown(ms: VariantMs): TransportBreakdown {
  return {
    tcpMs: ms.tcp,
    http2Ms: ms.http2Wide - ms.tcp,
    grpcJsMs: ms.rawGrpcWide - ms.http2Wide,
    protobufMs: ms.grpcWide - ms.rawGrpcWide,
    clientMs: ms.grpcWide,
    defaultWindowMs: ms.grpc - ms.grpcWide,
  };
}

/** Wall milliseconds per step from steps per second. */
export function msPerStep(rates: VariantMs): VariantMs {
  const ms = (rate: number) => 1000 / rate;
  return { tcp: ms(rates.tcp), http2Wide: ms(rates.http2Wide), rawGrpcWide: ms(rates.rawGrpcWide), grpcWide: ms(rates.grpcWide), grpc: ms(rates.grpc) };
}

export interface TransportResult {
  how: string;
  vocabSize: number;
  rows: TransportRow[];
}

/** HTTP/2's initial window, which grpc-js keeps unless `grpc-node.flow_control_window` raises it: the naive client. */
export const GRPC_JS_DEFAULT_WINDOW_BYTES = 65_535;

/** The window the project's clients open (core/grpc/client.ts). */
export const WIDE_WINDOW_BYTES = CLIENT_FLOW_CONTROL_WINDOW_BYTES;

export const TRANSPORT_HOW =
  "a `lightreasoner bench-worker transport-peer` child process serves StreamTrajectories through the project's grpc-js adapter " +
  "(one step message per token, distributions encoded once by the service's encoder), a plain TCP socket writing the same " +
  "serialized bytes, a plain Node HTTP/2 stream carrying them, and a bytes-only gRPC method (identity codecs); the benchmark process reads each, " +
  "every variant once per repeat in turn; the HTTP/2 and gRPC variants at the client's default 64 KiB window and at 8 MiB; " +
  "encode = encodeStepDistributions + serializeMessage, as the service encodes a step (SPARSE and FULL float16 on its ONNX Runtime graphs), and serializeMessage, protobuf-es's toBinary, the 5-byte-prefix copy and fromBinary alone, in the benchmark process; " +
  "CPU per step = the CPU time of every thread of both processes over a run (/proc/<pid>/task/<tid>/schedstat) over its steps";

/** Streams `steps` step messages over one StreamTrajectories call; returns steps per second. */
async function grpcRun(address: string, encoding: TransportEncoding, steps: number, settings: BenchSettings["transport"], window: number): Promise<number> {
  const channelOptions = { "grpc.max_receive_message_length": 64 << 20, "grpc-node.flow_control_window": window };
  const client = createClient(InferenceService, address, { channelOptions });
  try {
    const started = performance.now();
    const call = client.streamTrajectories();
    await call.write({
      requestId: "t0",
      action: { case: "start", value: { prompt: { source: { case: "tokenIds", value: { ids: [1] } } }, sampling: { maxNewTokens: steps }, distributions: requestOf(encoding, settings.alpha, settings.topK) } },
    });
    let received = 0;
    for await (const message of call) {
      if (message.event.case === "step") received++;
      else if (message.event.case === "finished") {
        const reason = message.event.value.end?.finishReason;
        if (reason !== FinishReason.LENGTH) throw new BenchProcessError(`transport peer: the call finished with ${reason}`);
        call.end();
      }
    }
    if (received !== steps) throw new BenchProcessError(`transport peer: ${received} of ${steps} steps arrived over gRPC`);
    return steps / ((performance.now() - started) / 1000);
  } finally {
    client.close();
  }
}

/** Streams `steps` pre-serialized step messages over the bench-only identity-codec method; returns steps per second. */
function rawGrpcRun(address: string, encoding: TransportEncoding, steps: number, window?: number): Promise<number> {
  const options = { "grpc.max_receive_message_length": 64 << 20, ...(window === undefined ? {} : { "grpc-node.flow_control_window": window }) };
  const client = new grpc.Client(address, grpc.credentials.createInsecure(), options);
  const method = RAW_STREAM_DEFINITION.streamBytes;
  return new Promise<number>((resolve, reject) => {
    const started = performance.now();
    let received = 0;
    const call = client.makeServerStreamRequest(method.path, method.requestSerialize, method.responseDeserialize, { encoding, steps });
    call.on("data", () => received++);
    call.on("error", reject);
    call.on("end", () => {
      if (received !== steps) reject(new BenchProcessError(`transport peer: ${received} of ${steps} raw steps arrived over gRPC`));
      else resolve(steps / ((performance.now() - started) / 1000));
    });
  }).finally(() => client.close());
}

/** Reads `steps` length-prefixed frames as the body of one plain HTTP/2 stream; returns steps per second. */
function http2Run(port: number, encoding: TransportEncoding, steps: number, frameBytes: number, window?: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const session = connectHttp2(`http://127.0.0.1:${port}`, window === undefined ? {} : { settings: { initialWindowSize: window } });
    const fail = (err: Error) => {
      session.destroy();
      reject(err);
    };
    session.on("error", fail);
    if (window !== undefined) session.once("connect", () => session.setLocalWindowSize(window));
    const expected = steps * frameBytes;
    let received = 0;
    const stream = session.request({ ":path": `/${encoding}/${steps}` });
    stream.on("data", (chunk: Buffer) => (received += chunk.length));
    stream.on("error", fail);
    stream.on("end", () => {
      const seconds = (performance.now() - started) / 1000;
      session.close();
      if (received !== expected) reject(new BenchProcessError(`transport peer: ${received} of ${expected} bytes arrived over HTTP/2`));
      else resolve(steps / seconds);
    });
  });
}

/** Milliseconds per call of `work`, over enough calls to last about 20 ms at 1 ms per call. */
function msPerCall(calls: number, work: () => unknown): number {
  const started = performance.now();
  for (let i = 0; i < calls; i++) work();
  return (performance.now() - started) / calls;
}

/**
 * The per-message CPU work of the gRPC path, each timed alone: serializing the step as the
 * service does (serializeMessage) and as protobuf-es's toBinary would (the naive way), grpc-js's
 * 5-byte-prefix copy, and parsing what the service sends.
 */
async function messageWork(encoding: TransportEncoding, settings: BenchSettings["transport"], repeats: number): Promise<Record<MessageWork, Measured>> {
  const message = create(StreamTrajectoriesResponseSchema, stepMessages({ vocabSize: settings.vocabSize, alpha: settings.alpha, topK: settings.topK })[encoding]);
  const bytes = serializeMessage(StreamTrajectoriesResponseSchema, message);
  const calls = encoding === "sparse" ? 2000 : 40;
  // grpc-js's serializeMessage: a new buffer of 5 + n bytes, the prefix, then a copy of the message.
  const frameCopy = () => {
    const framed = Buffer.allocUnsafe(bytes.length + 5);
    framed.writeUInt8(0, 0);
    framed.writeUInt32BE(bytes.length, 1);
    framed.set(bytes, 5);
    return framed;
  };
  const work: Record<MessageWork, () => unknown> = {
    serialize: () => serializeMessage(StreamTrajectoriesResponseSchema, message),
    toBinary: () => toBinary(StreamTrajectoriesResponseSchema, message),
    frameCopy,
    parse: () => fromBinary(StreamTrajectoriesResponseSchema, bytes),
  };
  const names = Object.keys(work) as MessageWork[];
  const out = Object.fromEntries(names.map((n) => [n, [] as number[]])) as Record<MessageWork, number[]>;
  for (const name of names) msPerCall(3, work[name]);
  for (let r = 0; r < repeats; r++) for (const name of names) out[name].push(msPerCall(calls, work[name]));
  return Object.fromEntries(names.map((n) => [n, measured(out[n], "ms")])) as Record<MessageWork, Measured>;
}

type MessageWork = "serialize" | "toBinary" | "frameCopy" | "parse";

/** Reads `steps` length-prefixed frames from the peer's TCP socket; returns steps per second. */
function tcpRun(port: number, encoding: TransportEncoding, steps: number, frameBytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const expected = steps * frameBytes;
    let received = 0;
    const socket = connect(port, "127.0.0.1", () => socket.write(`${encoding} ${steps}\n`));
    socket.on("data", (chunk: Buffer) => (received += chunk.length));
    socket.on("error", reject);
    socket.on("end", () => {
      if (received !== expected) reject(new BenchProcessError(`transport peer: ${received} of ${expected} bytes arrived over TCP`));
      else resolve(steps / ((performance.now() - started) / 1000));
    });
  });
}

/**
 * Milliseconds the server spends turning one step's two distributions into wire bytes, as the
 * service does it: SPARSE summarized and FULL float16 rounded on its ONNX Runtime graphs, then
 * serialized.
 */
async function encodeCost(encoding: TransportEncoding, settings: BenchSettings["transport"], repeats: number, pairGraphs: PairSummaryGraph): Promise<Measured> {
  const { logpExpert, logpAmateur } = syntheticStep(settings.vocabSize, 3);
  const spec = specOf(encoding, settings.alpha, settings.topK);
  const calls = 50;
  return repeat({ repeats, warmup: 1, unit: "ms" }, async () => {
    const started = performance.now();
    for (let i = 0; i < calls; i++) {
      const distributions = await encodeStepDistributions(logpExpert, logpAmateur, spec, pairGraphs);
      serializeMessage(StreamTrajectoriesResponseSchema, create(StreamTrajectoriesResponseSchema, { requestId: "t0", event: { case: "step", value: { step: i, scored: { distributions } } } }));
    }
    return (performance.now() - started) / calls;
  });
}

export async function runTransport(settings: BenchSettings, log: (line: string) => void): Promise<TransportResult> {
  const t = settings.transport;
  const input: TransportPeerInput = { vocabSize: t.vocabSize, alpha: t.alpha, topK: t.topK };
  const pairGraphs = await PairSummaryGraph.open(t.vocabSize, { executionProvider: "cpu" });
  const peer = spawnCli(["bench-worker", "transport-peer", JSON.stringify(input)]);
  const rows: TransportRow[] = [];
  try {
    const { ready } = (await peer.waitFor((l) => "ready" in l, 60_000, "transport peer")) as { ready: TransportPeerReady };
    const address = `127.0.0.1:${ready.grpcPort}`;
    for (const encoding of TRANSPORT_ENCODINGS) {
      const steps = t.steps[encoding];
      const bytes = ready.messageBytes[encoding];
      // Every variant once per repeat, in turn, so a busy moment falls on all of them.
      const variants = {
        grpc: () => grpcRun(address, encoding, steps, t, GRPC_JS_DEFAULT_WINDOW_BYTES),
        grpcWide: () => grpcRun(address, encoding, steps, t, WIDE_WINDOW_BYTES),
        http2: () => http2Run(ready.http2Port, encoding, steps, bytes + 4),
        http2Wide: () => http2Run(ready.http2Port, encoding, steps, bytes + 4, WIDE_WINDOW_BYTES),
        rawGrpc: () => rawGrpcRun(address, encoding, steps),
        rawGrpcWide: () => rawGrpcRun(address, encoding, steps, WIDE_WINDOW_BYTES),
        tcp: () => tcpRun(ready.tcpPort, encoding, steps, bytes + 4),
      };
      type Variant = keyof typeof variants;
      const names = Object.keys(variants) as Variant[];
      const rates = Object.fromEntries(names.map((n) => [n, [] as number[]])) as Record<Variant, number[]>;
      const cpuMs = Object.fromEntries(names.map((n) => [n, [] as number[]])) as Record<Variant, number[]>;
      // Both processes' CPU time around a run: what the step costs in work, which a busy
      // moment or where the scheduler puts the two processes changes far less than the rate.
      const bothCpuSeconds = () => liveThreadsCpuSeconds(process.pid) + liveThreadsCpuSeconds(peer.pid);
      const runOnce = async (n: Variant) => {
        const before = bothCpuSeconds();
        rates[n].push(await variants[n]());
        cpuMs[n].push(((bothCpuSeconds() - before) * 1000) / steps);
      };
      await grpcRun(address, encoding, Math.ceil(steps / 4), t, GRPC_JS_DEFAULT_WINDOW_BYTES);
      await rawGrpcRun(address, encoding, Math.ceil(steps / 4));
      await http2Run(ready.http2Port, encoding, Math.ceil(steps / 4), bytes + 4);
      await tcpRun(ready.tcpPort, encoding, Math.ceil(steps / 4), bytes + 4);
      for (let r = 0; r < t.repeats; r++) for (const n of names) await runOnce(n);
      const perRepeat = (over: Variant) => measured(rates[over].map((v, i) => v / rates.tcp[i]), "fraction");
      const grpcStepsPerSecond = measured(rates.grpc, "steps/s");
      const grpcWideWindowStepsPerSecond = measured(rates.grpcWide, "steps/s");
      const tcpStepsPerSecond = measured(rates.tcp, "steps/s");
      const http2StepsPerSecond = measured(rates.http2, "steps/s");
      const http2WideWindowStepsPerSecond = measured(rates.http2Wide, "steps/s");
      const rawGrpcStepsPerSecond = measured(rates.rawGrpc, "steps/s");
      const rawGrpcWideWindowStepsPerSecond = measured(rates.rawGrpcWide, "steps/s");
      const cpuMsPerStep = {
        tcp: measured(cpuMs.tcp, "ms"),
        http2Wide: measured(cpuMs.http2Wide, "ms"),
        rawGrpcWide: measured(cpuMs.rawGrpcWide, "ms"),
        grpcWide: measured(cpuMs.grpcWide, "ms"),
        grpc: measured(cpuMs.grpc, "ms"),
      };
      const encodeMsPerStep = await encodeCost(encoding, t, t.repeats, pairGraphs);
      const work = await messageWork(encoding, t, t.repeats);
      rows.push({
        encoding,
        bytesPerStep: bytes,
        stepsPerRun: steps,
        grpcStepsPerSecond,
        grpcWideWindowStepsPerSecond,
        tcpStepsPerSecond,
        http2StepsPerSecond,
        http2WideWindowStepsPerSecond,
        rawGrpcStepsPerSecond,
        rawGrpcWideWindowStepsPerSecond,
        grpcOverTcp: ratio(grpcStepsPerSecond, tcpStepsPerSecond),
        grpcWideWindowOverTcp: ratio(grpcWideWindowStepsPerSecond, tcpStepsPerSecond),
        grpcOverTcpPerRepeat: perRepeat("grpc"),
        grpcWideWindowOverTcpPerRepeat: perRepeat("grpcWide"),
        encodeMsPerStep,
        serializeMsPerStep: work.serialize,
        toBinaryMsPerStep: work.toBinary,
        frameCopyMsPerStep: work.frameCopy,
        parseMsPerStep: work.parse,
        breakdown: breakdown(msPerStep({ tcp: tcpStepsPerSecond.median, http2Wide: http2WideWindowStepsPerSecond.median, rawGrpcWide: rawGrpcWideWindowStepsPerSecond.median, grpcWide: grpcWideWindowStepsPerSecond.median, grpc: grpcStepsPerSecond.median })),
        cpuMsPerStep,
        cpuBreakdown: breakdown({ tcp: cpuMsPerStep.tcp.min, http2Wide: cpuMsPerStep.http2Wide.min, rawGrpcWide: cpuMsPerStep.rawGrpcWide.min, grpcWide: cpuMsPerStep.grpcWide.min, grpc: cpuMsPerStep.grpc.min }),
      });
      log(`  ${encoding}: ${bytes} B/step, gRPC ${grpcWideWindowStepsPerSecond.median.toFixed(0)} steps/s through the project's client (${grpcStepsPerSecond.median.toFixed(0)} at grpc-js's window), TCP ${tcpStepsPerSecond.median.toFixed(0)} steps/s, encode ${encodeMsPerStep.median.toFixed(2)} ms; CPU per step at least ${cpuMsPerStep.grpcWide.min.toFixed(3)} ms against TCP's ${cpuMsPerStep.tcp.min.toFixed(3)}`);
    }
  } finally {
    await stopChild(peer, 5000);
    await pairGraphs.release();
  }
  return { how: TRANSPORT_HOW, vocabSize: t.vocabSize, rows };
}
