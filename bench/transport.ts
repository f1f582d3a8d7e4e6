// Section "transport": how many step messages per second the gRPC stream carries on loopback
// for FULL float32, FULL float16 and SPARSE at a 151,936-token vocabulary, next to a raw TCP
// socket carrying the same serialized bytes between the same two processes; plus what it costs
// the server to produce one step's message (the service's encoder, then protobuf), since that
// is paid on the serving thread before the wire sees a byte.
import { create, toBinary } from "@bufbuild/protobuf";
import { connect } from "node:net";
import { createClient } from "#core/grpc/adapter.ts";
import { FinishReason } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { InferenceService, StreamTrajectoriesResponseSchema } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { encodeDistributions } from "#inference/server/distributions.ts";
import { syntheticStep } from "./distributions.ts";
import { BenchProcessError, spawnCli, stopChild } from "./processes.ts";
import type { BenchSettings } from "./settings.ts";
import type { Measured } from "./stats.ts";
import { measured, ratio, repeat } from "./stats.ts";
import type { TransportEncoding, TransportPeerInput, TransportPeerReady } from "./transport-peer.ts";
import { TRANSPORT_ENCODINGS, requestOf, specOf } from "./transport-peer.ts";

export interface TransportRow {
  encoding: TransportEncoding;
  /** Serialized StreamTrajectoriesResponse of one step (gRPC adds a 5-byte prefix, TCP here a 4-byte one). */
  bytesPerStep: number;
  stepsPerRun: number;
  grpcStepsPerSecond: Measured;
  /** The same stream with the client's HTTP/2 flow-control window raised from 64 KiB (see WIDE_WINDOW_BYTES). */
  grpcWideWindowStepsPerSecond: Measured;
  tcpStepsPerSecond: Measured;
  /** gRPC over raw TCP: the share of the socket's rate the gRPC stream keeps. */
  grpcOverTcp: number | null;
  /** Server-side cost of one step before the wire: encodeDistributions + protobuf serialization. */
  encodeMsPerStep: Measured;
}

export interface TransportResult {
  how: string;
  vocabSize: number;
  rows: TransportRow[];
}

/**
 * grpc-js leaves a client's HTTP/2 receive window at 64 KiB unless the channel option
 * `grpc-node.flow_control_window` raises it; a 1.2 MB FULL step then waits on about twenty
 * window updates. This is the raised window the benchmark compares against.
 */
export const WIDE_WINDOW_BYTES = 8 << 20;

export const TRANSPORT_HOW =
  "a `lightreasoner bench-worker transport-peer` child process serves StreamTrajectories through the project's grpc-js adapter " +
  "(one step message per token, distributions encoded once by the service's encoder) and a plain TCP socket writing the same " +
  "serialized bytes; the benchmark process reads either; encode = encodeDistributions + toBinary in the benchmark process";

/** Streams `steps` step messages over one StreamTrajectories call; returns steps per second. */
async function grpcRun(address: string, encoding: TransportEncoding, steps: number, settings: BenchSettings["transport"], window?: number): Promise<number> {
  const channelOptions = { "grpc.max_receive_message_length": 64 << 20, ...(window === undefined ? {} : { "grpc-node.flow_control_window": window }) };
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
        if (message.event.value.finishReason !== FinishReason.LENGTH) throw new BenchProcessError(`transport peer: the call finished with ${message.event.value.finishReason}`);
        call.end();
      }
    }
    if (received !== steps) throw new BenchProcessError(`transport peer: ${received} of ${steps} steps arrived over gRPC`);
    return steps / ((performance.now() - started) / 1000);
  } finally {
    client.close();
  }
}

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

/** Milliseconds the server spends turning one step's two distributions into wire bytes. */
async function encodeCost(encoding: TransportEncoding, settings: BenchSettings["transport"], repeats: number): Promise<Measured> {
  const { logpExpert, logpAmateur } = syntheticStep(settings.vocabSize, 3);
  const spec = specOf(encoding, settings.alpha, settings.topK);
  const calls = encoding === "sparse" ? 20 : 50;
  return repeat({ repeats, warmup: 1, unit: "ms" }, () => {
    const started = performance.now();
    for (let i = 0; i < calls; i++) {
      const distributions = encodeDistributions(logpExpert, logpAmateur, spec);
      toBinary(StreamTrajectoriesResponseSchema, create(StreamTrajectoriesResponseSchema, { requestId: "t0", event: { case: "step", value: { step: i, distributions } } }));
    }
    return (performance.now() - started) / calls;
  });
}

export async function runTransport(settings: BenchSettings, log: (line: string) => void): Promise<TransportResult> {
  const t = settings.transport;
  const input: TransportPeerInput = { vocabSize: t.vocabSize, alpha: t.alpha, topK: t.topK };
  const peer = spawnCli(["bench-worker", "transport-peer", JSON.stringify(input)]);
  const rows: TransportRow[] = [];
  try {
    const { ready } = (await peer.waitFor((l) => "ready" in l, 60_000, "transport peer")) as { ready: TransportPeerReady };
    const address = `127.0.0.1:${ready.grpcPort}`;
    for (const encoding of TRANSPORT_ENCODINGS) {
      const steps = t.steps[encoding];
      const bytes = ready.messageBytes[encoding];
      // Alternate the two transports within each repeat, so a busy moment hits both.
      const grpcRates: number[] = [];
      const wideRates: number[] = [];
      const tcpRates: number[] = [];
      await grpcRun(address, encoding, Math.ceil(steps / 4), t);
      await grpcRun(address, encoding, Math.ceil(steps / 4), t, WIDE_WINDOW_BYTES);
      await tcpRun(ready.tcpPort, encoding, Math.ceil(steps / 4), bytes + 4);
      for (let r = 0; r < t.repeats; r++) {
        grpcRates.push(await grpcRun(address, encoding, steps, t));
        wideRates.push(await grpcRun(address, encoding, steps, t, WIDE_WINDOW_BYTES));
        tcpRates.push(await tcpRun(ready.tcpPort, encoding, steps, bytes + 4));
      }
      const grpcStepsPerSecond = measured(grpcRates, "steps/s");
      const grpcWideWindowStepsPerSecond = measured(wideRates, "steps/s");
      const tcpStepsPerSecond = measured(tcpRates, "steps/s");
      const encodeMsPerStep = await encodeCost(encoding, t, t.repeats);
      rows.push({ encoding, bytesPerStep: bytes, stepsPerRun: steps, grpcStepsPerSecond, grpcWideWindowStepsPerSecond, tcpStepsPerSecond, grpcOverTcp: ratio(grpcStepsPerSecond, tcpStepsPerSecond), encodeMsPerStep });
      log(`  ${encoding}: ${bytes} B/step, gRPC ${grpcStepsPerSecond.median.toFixed(0)} steps/s (${grpcWideWindowStepsPerSecond.median.toFixed(0)} with an 8 MiB window), TCP ${tcpStepsPerSecond.median.toFixed(0)} steps/s, encode ${encodeMsPerStep.median.toFixed(2)} ms`);
    }
  } finally {
    await stopChild(peer, 5000);
  }
  return { how: TRANSPORT_HOW, vocabSize: t.vocabSize, rows };
}
