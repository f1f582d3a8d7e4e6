// The protobuf-es <-> grpc-js adapter over a real loopback socket, with the generated
// InferenceService (unary, server-streaming, bidirectional) and AdapterService
// (client-streaming) descriptors and small handlers written here.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { z } from "zod";
import { addService, createClient, GrpcError, invalidArgument, Status } from "#core/grpc/adapter.ts";
import type { ErrorLogger, ServiceClient, ServiceHandlers } from "#core/grpc/adapter.ts";
import { ModelFormatError, UnsupportedModelError } from "#core/model/errors.ts";
import { AdapterService } from "#core/gen/lightreasoner/v1/adapter_pb.ts";
import { FinishReason } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { InferenceService } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import type { StreamTrajectoriesResponse } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { listen, sleep } from "./loopback.ts";
import type { Loopback } from "./loopback.ts";

type InferenceMethods = typeof InferenceService extends { method: infer M } ? M : never;
type AdapterMethods = typeof AdapterService extends { method: infer M } ? M : never;

/** What the server side saw, for assertions the client cannot make. */
const seen = {
  generateSent: 0,
  aborts: [] as GrpcError[],
  logged: [] as { details: Record<string, unknown>; message: string }[],
};
let abortSeen: (reason: GrpcError) => void = () => {};
const nextAbort = () => new Promise<GrpcError>((resolve) => (abortSeen = resolve));

const logger: ErrorLogger = { error: (details, message) => seen.logged.push({ details, message }) };

/** Prompts that make the Generate handler fail in a chosen way. */
const failures: Record<string, () => never> = {
  "model-format": () => {
    throw new ModelFormatError("adapter_config.json", '"r" must be a positive integer');
  },
  unsupported: () => {
    throw new UnsupportedModelError("config.json", 'model_type "gpt2" is not supported');
  },
  zod: () => {
    z.object({ beta: z.number().min(0) }).parse({ beta: -1 });
    throw new Error("unreachable");
  },
  "missing-file": () => {
    readFileSync("/nonexistent/problems.jsonl");
    throw new Error("unreachable");
  },
  internal: () => {
    throw new Error("secret detail: tensor 7 is NaN");
  },
};

const inference: ServiceHandlers<InferenceMethods> = {
  getModelInfo(_request, ctx) {
    return { vocabSize: 151936, adapterVersion: ctx.metadata.get("x-want-version")[0]?.toString() ?? "", limits: { maxNewTokens: 128 } };
  },

  async generate(request, send, ctx) {
    const prompt = request.prompt?.source.case === "text" ? request.prompt.source.value : "";
    if ((request.sampling?.temperature ?? 0) < 0) throw invalidArgument("sampling.temperature", "must be >= 0");
    failures[prompt]?.();
    if (prompt === "wait-for-cancel") {
      const reason = await new Promise<GrpcError>((resolve) => ctx.signal.addEventListener("abort", () => resolve(ctx.signal.reason)));
      abortSeen(reason);
      throw reason;
    }
    const text = prompt === "big" ? "x".repeat(1024) : "tok";
    try {
      for (let i = 0; i < (request.sampling?.maxNewTokens ?? 0); i++) {
        await send({ event: { case: "chunk", value: { text: `${text}${i}`, tokenIds: [i] } } });
        seen.generateSent = i + 1;
        if (prompt === "slow") await sleep(5);
        if (prompt === "fail-midway" && i === 2) throw new GrpcError(Status.RESOURCE_EXHAUSTED, "batch slots ran out");
      }
    } catch (err) {
      if (ctx.signal.aborted) abortSeen(ctx.signal.reason);
      throw err;
    }
    await send({ event: { case: "finished", value: { end: { finishReason: FinishReason.LENGTH, usage: { completionTokens: request.sampling?.maxNewTokens } } } } });
  },

  // Trajectories run concurrently and their steps interleave on the one response stream.
  async streamTrajectories(requests, send, ctx) {
    ctx.signal.addEventListener("abort", () => abortSeen(ctx.signal.reason));
    const running = new Map<string, AbortController>();
    const tasks: Promise<void>[] = [];
    const trajectory = async (id: string, steps: number, stop: AbortSignal) => {
      await send({ requestId: id, event: { case: "started", value: { promptTokenIds: [1, 2, 3], seed: 7 } } });
      let reason = FinishReason.LENGTH;
      for (let step = 0; step < steps; step++) {
        await sleep(1);
        if (stop.aborted) {
          reason = FinishReason.CANCELLED;
          break;
        }
        await send({ requestId: id, event: { case: "step", value: { step, scored: { position: 3 + step, tokenId: 100 + step } } } });
      }
      running.delete(id);
      await send({ requestId: id, event: { case: "finished", value: { end: { finishReason: reason } } } });
    };
    for await (const request of requests) {
      if (request.requestId === "") throw invalidArgument("request_id", "must not be empty");
      if (request.action.case === "start") {
        const stop = new AbortController();
        running.set(request.requestId, stop);
        tasks.push(trajectory(request.requestId, request.action.value.sampling?.maxNewTokens ?? 1, stop.signal));
      } else if (request.action.case === "cancel") {
        running.get(request.requestId)?.abort();
      }
    }
    if (ctx.signal.aborted) return;
    await Promise.all(tasks);
  },

  async score() {
    throw new GrpcError(Status.UNIMPLEMENTED, "not in this test");
  },
};

const adapters: ServiceHandlers<AdapterMethods> = {
  async uploadAdapter(requests) {
    let declared = -1;
    const hash = createHash("sha256");
    let received = 0;
    for await (const request of requests) {
      if (request.part.case === "header") declared = request.part.value.safetensorsSize;
      else if (request.part.case === "safetensorsChunk") {
        if (declared < 0) throw invalidArgument("header", "must come first");
        hash.update(request.part.value);
        received += request.part.value.length;
      }
    }
    if (received !== declared) throw invalidArgument("header.safetensors_size", `declared ${declared} bytes, received ${received}`);
    return { loaded: { adapter: { version: hash.digest("hex").slice(0, 16), sizeBytes: received, source: "upload" } } };
  },
  loadAdapter: () => {
    // A handler that throws synchronously still becomes a status.
    throw new GrpcError(Status.PERMISSION_DENIED, "directory: outside the allowed adapter directories");
  },
  async listAdapters() {
    return { adapters: [], activeVersion: "" };
  },
  async activateAdapter(request) {
    throw new GrpcError(Status.NOT_FOUND, `version: adapter ${request.version} is not loaded`, "version");
  },
  async rollbackToBase() {
    return { previousVersion: "" };
  },
  async unloadAdapter() {
    return {};
  },
};

let loopback: Loopback;
let client: ServiceClient<InferenceMethods>;
let adapterClient: ServiceClient<AdapterMethods>;

beforeAll(async () => {
  const server = new grpc.Server();
  addService(server, InferenceService, inference, logger);
  addService(server, AdapterService, adapters, logger);
  loopback = await listen(server);
  client = createClient(InferenceService, loopback.address);
  adapterClient = createClient(AdapterService, client.channel);
});

afterAll(() => {
  client?.close();
  loopback?.stop();
});

async function statusOf(work: () => Promise<unknown>): Promise<GrpcError> {
  try {
    await work();
  } catch (err) {
    expect(err).toBeInstanceOf(GrpcError);
    return err as GrpcError;
  }
  throw new Error("expected the call to fail");
}

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const message of stream) out.push(message);
  return out;
}

const generate = (text: string, maxNewTokens: number, temperature = 0) => ({ prompt: { source: { case: "text" as const, value: text } }, sampling: { maxNewTokens, temperature } });

describe("round trips", () => {
  it("unary: typed request and response, request metadata reaches the handler", async () => {
    const metadata = new grpc.Metadata();
    metadata.set("x-want-version", "abc123");
    const info = await client.getModelInfo({}, { metadata });
    expect(info.$typeName).toBe("lightreasoner.v1.GetModelInfoResponse");
    expect(info.vocabSize).toBe(151936);
    expect(info.adapterVersion).toBe("abc123");
    expect(info.limits?.maxNewTokens).toBe(128);
  });

  it("server streaming: every message in order, then the end", async () => {
    const messages = await collect(client.generate(generate("hello", 5)));
    expect(messages.map((m) => m.event.case)).toEqual(["chunk", "chunk", "chunk", "chunk", "chunk", "finished"]);
    expect(messages.slice(0, 5).map((m) => (m.event.case === "chunk" ? m.event.value.tokenIds[0] : -1))).toEqual([0, 1, 2, 3, 4]);
    const last = messages[5].event;
    expect(last.case === "finished" && last.value.end!.finishReason).toBe(FinishReason.LENGTH);
  });

  it("client streaming: chunks written with back-pressure arrive whole", async () => {
    const bytes = new Uint8Array(3 * 1024 * 1024).map((_, i) => (i * 2654435761) >>> 24);
    const upload = adapterClient.uploadAdapter();
    await upload.write({ part: { case: "header", value: { adapterConfigJson: "{}", safetensorsSize: bytes.length } } });
    for (let offset = 0; offset < bytes.length; offset += 64 * 1024) {
      await upload.write({ part: { case: "safetensorsChunk", value: bytes.subarray(offset, offset + 64 * 1024) } });
    }
    const response = await upload.end();
    expect(response.loaded?.adapter?.sizeBytes).toBe(bytes.length);
    expect(response.loaded?.adapter?.version).toBe(createHash("sha256").update(bytes).digest("hex").slice(0, 16));
  });

  it("bidirectional: interleaved trajectories, each complete and in order", async () => {
    const call = client.streamTrajectories();
    const lengths: Record<string, number> = { a: 6, b: 3, c: 9 };
    for (const [id, steps] of Object.entries(lengths)) {
      await call.write({ requestId: id, action: { case: "start", value: { sampling: { maxNewTokens: steps } } } });
    }
    call.end();
    const byId = new Map<string, StreamTrajectoriesResponse[]>();
    const order: string[] = [];
    for await (const message of call) {
      order.push(message.requestId);
      byId.set(message.requestId, [...(byId.get(message.requestId) ?? []), message]);
    }
    for (const [id, steps] of Object.entries(lengths)) {
      const events = byId.get(id) ?? [];
      expect(events.map((m) => m.event.case)).toEqual(["started", ...Array(steps).fill("step"), "finished"]);
      expect(events.filter((m) => m.event.case === "step").map((m) => (m.event.value as { step: number }).step)).toEqual([...Array(steps).keys()]);
    }
    // Interleaved: some other id appears between a's first and last message.
    const aSpan = order.slice(order.indexOf("a"), order.lastIndexOf("a"));
    expect(aSpan.some((id) => id !== "a")).toBe(true);
  });

  it("bidirectional: a cancel message ends one trajectory, the others run on", async () => {
    const call = client.streamTrajectories();
    await call.write({ requestId: "long", action: { case: "start", value: { sampling: { maxNewTokens: 10_000 } } } });
    await call.write({ requestId: "short", action: { case: "start", value: { sampling: { maxNewTokens: 4 } } } });
    const finished = new Map<string, FinishReason>();
    for await (const message of call) {
      if (message.requestId === "long" && message.event.case === "step" && message.event.value.step === 5) {
        await call.write({ requestId: "long", action: { case: "cancel", value: {} } });
        call.end();
      }
      if (message.event.case === "finished") finished.set(message.requestId, message.event.value.end!.finishReason);
    }
    expect(finished.get("long")).toBe(FinishReason.CANCELLED);
    expect(finished.get("short")).toBe(FinishReason.LENGTH);
  });
});

describe("errors become status codes", () => {
  it("a GrpcError keeps its code, message and field", async () => {
    const err = await statusOf(() => collect(client.generate(generate("hi", 3, -0.5))));
    expect(err.code).toBe(Status.INVALID_ARGUMENT);
    expect(err.message).toBe("sampling.temperature: must be >= 0");
    expect(err.field).toBe("sampling.temperature");
  });

  it("unary and client-streaming handlers report theirs too, sync throws included", async () => {
    const notFound = await statusOf(() => adapterClient.activateAdapter({ version: "deadbeef" }));
    expect([notFound.code, notFound.field]).toEqual([Status.NOT_FOUND, "version"]);
    const denied = await statusOf(() => adapterClient.loadAdapter({ directory: "/etc" }));
    expect(denied.code).toBe(Status.PERMISSION_DENIED);
    const upload = adapterClient.uploadAdapter();
    await upload.write({ part: { case: "header", value: { safetensorsSize: 10 } } });
    await upload.write({ part: { case: "safetensorsChunk", value: new Uint8Array(4) } });
    const short = await statusOf(() => upload.end());
    expect(short.code).toBe(Status.INVALID_ARGUMENT);
    expect(short.message).toContain("declared 10 bytes, received 4");
  });

  it.each([
    ["model-format", Status.INVALID_ARGUMENT, 'adapter_config.json: "r" must be a positive integer'],
    ["unsupported", Status.FAILED_PRECONDITION, 'config.json: model_type "gpt2" is not supported'],
    ["zod", Status.INVALID_ARGUMENT, "beta: "],
    ["missing-file", Status.NOT_FOUND, "/nonexistent/problems.jsonl"],
  ])("%s maps to its code", async (prompt, code, message) => {
    const err = await statusOf(() => collect(client.generate(generate(prompt, 3))));
    expect(err.code).toBe(code);
    expect(err.message).toContain(message);
  });

  it("an unknown error is INTERNAL for the client and logged in full on the server", async () => {
    const before = seen.logged.length;
    const err = await statusOf(() => collect(client.generate(generate("internal", 3))));
    expect(err.code).toBe(Status.INTERNAL);
    expect(err.message).not.toContain("secret");
    expect(seen.logged.length).toBe(before + 1);
    expect(seen.logged[before].message).toBe("secret detail: tensor 7 is NaN");
    expect(seen.logged[before].details.method).toBe("/lightreasoner.v1.InferenceService/Generate");
  });

  it("a stream that fails midway delivers what was sent, then the status", async () => {
    const received: number[] = [];
    const err = await statusOf(async () => {
      for await (const message of client.generate(generate("fail-midway", 10))) {
        if (message.event.case === "chunk") received.push(message.event.value.tokenIds[0]);
      }
    });
    expect(err.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(received).toEqual([0, 1, 2]);
  });

  it("a protocol error in a bidirectional stream ends the call with its status", async () => {
    const call = client.streamTrajectories();
    await call.write({ requestId: "", action: { case: "start", value: {} } });
    const err = await statusOf(() => collect(call));
    expect([err.code, err.field]).toEqual([Status.INVALID_ARGUMENT, "request_id"]);
  });
});

describe("cancellation reaches the handler", () => {
  it("client abort: the client sees CANCELLED, the handler's signal fires", async () => {
    const aborted = nextAbort();
    const controller = new AbortController();
    const failure = statusOf(() => collect(client.generate(generate("wait-for-cancel", 1), { signal: controller.signal })));
    await sleep(50);
    controller.abort();
    expect((await failure).code).toBe(Status.CANCELLED);
    expect((await aborted).code).toBe(Status.CANCELLED);
  });

  it("deadline: the client sees DEADLINE_EXCEEDED, the handler's signal fires with that reason", async () => {
    const aborted = nextAbort();
    const err = await statusOf(() => collect(client.generate(generate("wait-for-cancel", 1), { timeoutMs: 150 })));
    expect(err.code).toBe(Status.DEADLINE_EXCEEDED);
    expect((await aborted).code).toBe(Status.DEADLINE_EXCEEDED);
  });

  it("a client that stops reading early cancels the call, and the handler's send rejects", async () => {
    const aborted = nextAbort();
    let count = 0;
    for await (const message of client.generate(generate("slow", 10_000))) {
      expect(message.event.case).toBe("chunk");
      if (++count === 3) break;
    }
    expect((await aborted).code).toBe(Status.CANCELLED);
    const sentAtAbort = seen.generateSent;
    await sleep(100);
    expect(seen.generateSent).toBe(sentAtAbort);
    expect(sentAtAbort).toBeLessThan(10_000);
  });

  it("cancelling a bidirectional call aborts its handler", async () => {
    const aborted = nextAbort();
    const call = client.streamTrajectories();
    await call.write({ requestId: "x", action: { case: "start", value: { sampling: { maxNewTokens: 100_000 } } } });
    const failure = statusOf(() => collect(call));
    await sleep(50);
    call.cancel();
    expect((await failure).code).toBe(Status.CANCELLED);
    expect((await aborted).code).toBe(Status.CANCELLED);
  });

  it("a client-streaming handler waiting for its next request wakes when the call is cut off", async () => {
    // A Node client half-closes before it resets a cancelled stream, so cut the call off from
    // the server side instead: a forced shutdown, as at the end of a shutdown grace period.
    let exited: (outcome: unknown) => void = () => {};
    const outcome = new Promise<unknown>((resolve) => (exited = resolve));
    let received: () => void = () => {};
    const firstRequest = new Promise<void>((resolve) => (received = resolve));
    const server = new grpc.Server();
    const waiting: ServiceHandlers<AdapterMethods> = {
      ...adapters,
      async uploadAdapter(requests) {
        try {
          for await (const _ of requests) received();
          exited("ended");
        } catch (err) {
          exited(err);
          throw err;
        }
        return {};
      },
    };
    addService(server, AdapterService, waiting, logger);
    const other = await listen(server);
    const otherClient = createClient(AdapterService, other.address);
    const upload = otherClient.uploadAdapter();
    await upload.write({ part: { case: "header", value: { safetensorsSize: 10 } } });
    // The handler must be waiting for its next request when the call is cut off (a fixed sleep
    // was too short on a busy machine).
    await firstRequest;
    other.stop();
    const err = await outcome;
    expect(err).toBeInstanceOf(GrpcError);
    expect((err as GrpcError).code).toBe(Status.CANCELLED);
    await expect(upload.end()).rejects.toBeInstanceOf(GrpcError);
    otherClient.close();
  });
});

describe("back-pressure", () => {
  it("a slow reader keeps the server's sent-but-unread messages bounded", async () => {
    // At HTTP/2's own 64 KiB window: the project's client opens 8 MiB, room for more than all
    // 5000 messages, which would hide whether the handler waits.
    const narrow = createClient(InferenceService, loopback.address, { channelOptions: { "grpc-node.flow_control_window": 65_535 } });
    onTestFinished(() => narrow.close());
    const total = 5000;
    const unread: number[] = [];
    let received = 0;
    for await (const message of narrow.generate(generate("big", total))) {
      received++;
      if (received === 1) {
        // Stop reading for a while: the handler's send must stop resolving, not buffer on.
        await sleep(250);
        unread.push(seen.generateSent - received);
        await sleep(250);
        unread.push(seen.generateSent - received);
      }
      if (message.event.case === "chunk") expect(message.event.value.tokenIds[0]).toBe(received - 1);
    }
    expect(received).toBe(total + 1);
    // ~1 KiB messages: HTTP/2 flow-control windows and the streams' high-water marks hold a
    // few hundred KiB at most, far below the 5000 messages a non-waiting handler would queue.
    expect(unread[0]).toBeLessThan(400);
    expect(unread[1]).toBeLessThan(400);
  });
});
