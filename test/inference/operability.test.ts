// Running the service: cancellation and deadlines free batch slots, a slow reader pauses its
// sequence instead of making the server buffer, /metrics reports the work with plausible
// values, health says NOT_SERVING while draining, and a graceful shutdown lets running
// streams finish within the deadline and cancels what is left after it.
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { Status, createClient } from "#core/grpc/adapter.ts";
import { FinishReason } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { GenerationMode, InferenceService } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import type { StreamTrajectoriesResponse } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import type { InferenceServer } from "#inference/main.ts";
import { FULL32, byRequest, clients, collect, eventually, idsPrompt, metric, scrape, sleep, sparse, startServer, statusOf, writeTinyPair } from "./helpers.ts";
import type { TinyPair } from "./helpers.ts";

let pair: TinyPair;
let server: InferenceServer;
let client: ReturnType<typeof clients>;

beforeAll(async () => {
  pair = writeTinyPair();
  server = await startServer(pair, { limits: { maxBatchSize: 1 } });
  client = clients(server);
});

afterAll(async () => {
  client?.close();
  await server?.close(1000);
  pair?.remove();
});

const PROMPT = idsPrompt([2, 77, 350, 113]);
const long = (distributions: object = sparse()) => ({ prompt: PROMPT, sampling: { temperature: 1, seed: 1, maxNewTokens: 1000 }, distributions });
const sequences = async (s: InferenceServer, state: string) => metric(await scrape(s), "lightreasoner_inference_sequences", { state });

/** grpc.health.v1.Health/Check with its two tiny messages encoded by hand (field 1 each). */
function healthStatus(address: string, service: string): Promise<number> {
  const channel = new grpc.Client(address, grpc.credentials.createInsecure());
  const serialize = (name: string) => {
    const bytes = Buffer.from(name);
    return Buffer.concat([Buffer.from([0x0a, bytes.length]), bytes]);
  };
  const deserialize = (buffer: Buffer) => (buffer.length >= 2 && buffer[0] === 0x08 ? buffer[1] : 0);
  return new Promise((resolve, reject) =>
    channel.makeUnaryRequest("/grpc.health.v1.Health/Check", serialize, deserialize, service, (err, value) => {
      channel.close();
      if (err) reject(err);
      else resolve(value!);
    }),
  );
}
const SERVING = 1;
const NOT_SERVING = 2;

describe("cancellation and deadlines", () => {
  it("cancelling a call frees its batch slot for a waiting request", async () => {
    // One batch slot: a long trajectory holds it, a Generate has to wait behind it.
    const controller = new AbortController();
    const call = client.inference.streamTrajectories({ signal: controller.signal });
    await call.write({ requestId: "hog", action: { case: "start", value: long() } });
    const iterator = call[Symbol.asyncIterator]();
    for (let steps = 0; steps < 3; ) if ((await iterator.next()).value?.event.case === "step") steps++;
    const waiting = collect(client.inference.generate({ prompt: PROMPT, sampling: { maxNewTokens: 5 }, mode: GenerationMode.EXPERT }));
    await eventually(async () => (await sequences(server, "waiting")) === 1, 5000, "the Generate to queue");
    expect(await sequences(server, "running")).toBe(1);
    const cancelledBefore = metric(await scrape(server), "lightreasoner_inference_sequences_finished_total", { reason: "cancelled" });
    controller.abort();
    // Messages already received are still handed out; then the call reports CANCELLED.
    const drained = (async () => {
      for (;;) if ((await iterator.next()).done) return;
    })();
    await expect(drained).rejects.toMatchObject({ code: Status.CANCELLED });
    const generated = await waiting;
    expect(generated.at(-1)!.event.case).toBe("finished");
    await eventually(async () => (await sequences(server, "running")) === 0 && metric(await scrape(server), "lightreasoner_inference_active_streams") === 0, 5000, "slots to free");
    expect(metric(await scrape(server), "lightreasoner_inference_sequences_finished_total", { reason: "cancelled" })).toBe(cancelledBefore + 1);
  });

  it("a TrajectoryCancel ends one trajectory; the call and its other trajectory go on", async () => {
    const call = client.inference.streamTrajectories();
    await call.write({ requestId: "long", action: { case: "start", value: long() } });
    await call.write({ requestId: "short", action: { case: "start", value: { ...long(), sampling: { temperature: 1, seed: 2, maxNewTokens: 5 } } } });
    const seen: StreamTrajectoriesResponse[] = [];
    for await (const message of call) {
      seen.push(message);
      if (message.requestId === "long" && message.event.case === "step" && message.event.value.step === 3) {
        await call.write({ requestId: "long", action: { case: "cancel", value: {} } });
        call.end();
      }
    }
    const byId = byRequest(seen);
    expect(byId.get("long")!.finished.end!.finishReason).toBe(FinishReason.CANCELLED);
    expect(byId.get("long")!.steps.length).toBeLessThan(20);
    expect(byId.get("short")!.finished.end!.usage!.completionTokens).toBe(byId.get("short")!.steps.length);
    expect([FinishReason.LENGTH, FinishReason.EOS]).toContain(byId.get("short")!.finished.end!.finishReason);
  });

  it("a passed deadline ends the call with DEADLINE_EXCEEDED and stops its computation", async () => {
    // FULL steps and a client that does not read: the server is still at work when the deadline passes.
    const call = client.inference.streamTrajectories({ timeoutMs: 300 });
    await call.write({ requestId: "late", action: { case: "start", value: long(FULL32) } });
    const iterator = call[Symbol.asyncIterator]();
    await iterator.next();
    await sleep(400);
    const drained = (async () => {
      for (;;) if ((await iterator.next()).done) return;
    })();
    await expect(drained).rejects.toMatchObject({ code: Status.DEADLINE_EXCEEDED });
    await eventually(async () => (await sequences(server, "running")) === 0, 5000, "the sequence to stop");
    const steps = metric(await scrape(server), "lightreasoner_inference_trajectory_steps_streamed_total", { encoding: "full" });
    expect(steps).toBeLessThan(1000);
    await sleep(200);
    expect(metric(await scrape(server), "lightreasoner_inference_trajectory_steps_streamed_total", { encoding: "full" })).toBe(steps);
  });
});

describe("back-pressure", () => {
  it("a slow reader pauses its trajectory instead of making the server buffer; it resumes when read", async () => {
    // At HTTP/2's own 64 KiB window: the 8 MiB the project's client opens would take all 1000
    // steps (FULL float32, about 3 KiB each, 3 MB) and hide whether the server waits.
    const narrow = createClient(InferenceService, server.address, { channelOptions: { "grpc-node.flow_control_window": 65_535 } });
    onTestFinished(() => narrow.close());
    // The counter is the server's total: the earlier tests' FULL steps (how many depends on
    // their timing) are taken off, so what is compared is this trajectory's own.
    const streamedBefore = metric(await scrape(server), "lightreasoner_inference_trajectory_steps_streamed_total", { encoding: "full" });
    const call = narrow.streamTrajectories();
    // A failed check would leave the trajectory paused on the only batch slot: cancel it.
    onTestFinished(() => call.cancel());
    await call.write({ requestId: "slow", action: { case: "start", value: long(FULL32) } });
    call.end();
    const iterator = call[Symbol.asyncIterator]();
    await iterator.next();
    const streamed = async () => metric(await scrape(server), "lightreasoner_inference_trajectory_steps_streamed_total", { encoding: "full" }) - streamedBefore;
    let previous = -1;
    await eventually(async () => {
      const now = await streamed();
      const stalled = now === previous;
      previous = now;
      if (!stalled) await sleep(150);
      return stalled;
    }, 10_000, "the trajectory to stall");
    expect(previous).toBeLessThan(400);
    expect(await sequences(server, "paused")).toBe(1);
    await sleep(300);
    expect(await streamed()).toBe(previous);
    // Reading again resumes it to the end, every step in order.
    const rest: StreamTrajectoriesResponse[] = [];
    for (;;) {
      const { value, done } = await iterator.next();
      if (done) break;
      rest.push(value);
    }
    const finished = rest.at(-1)!.event;
    expect(finished.case).toBe("finished");
    const steps = rest.filter((m) => m.event.case === "step");
    expect(steps.length).toBe(finished.case === "finished" ? finished.value.end?.usage?.completionTokens : undefined);
    expect(steps.length).toBeGreaterThan(previous);
  });
});

describe("metrics", () => {
  it("a /metrics scrape after the runs above holds every metric with plausible values", async () => {
    await collect(client.inference.generate({ prompt: PROMPT, sampling: { maxNewTokens: 4 }, mode: GenerationMode.AMATEUR }));
    await collect(client.inference.generate({ prompt: PROMPT, sampling: { temperature: 1, topP: 0.9, seed: 5, maxNewTokens: 4 }, mode: GenerationMode.EXPERT }));
    await statusOf(() => collect(client.inference.generate({ prompt: PROMPT, sampling: { temperature: -1 }, mode: GenerationMode.EXPERT })));
    const s = await scrape(server);
    const m = (name: string, labels: Record<string, string> = {}) => metric(s, `lightreasoner_inference_${name}`, labels);
    expect(m("tokens_streamed_total", { mode: "trajectory" })).toBeGreaterThan(100);
    expect(m("tokens_streamed_total", { mode: "expert" })).toBeGreaterThanOrEqual(5);
    expect(m("tokens_streamed_total", { mode: "amateur" })).toBeGreaterThanOrEqual(1);
    // The sampled Generate's draws ran on the sampling graph (a built-in row's nucleus always fits its candidates).
    expect(m("sampled_tokens_total", { by: "graph" })).toBeGreaterThanOrEqual(1);
    expect(m("trajectory_steps_streamed_total", { encoding: "full" })).toBeGreaterThan(100);
    expect(m("trajectory_steps_streamed_total", { encoding: "sparse" })).toBeGreaterThan(3);
    expect(m("active_streams")).toBe(0);
    expect(m("sequences", { state: "running" })).toBe(0);
    // maxBatchSize 1: every batch held exactly one sequence.
    expect(m("batch_size_count", { model: "expert" })).toBeGreaterThan(100);
    expect(m("batch_size_sum", { model: "expert" })).toBe(m("batch_size_count", { model: "expert" }));
    for (const model of ["expert", "amateur"]) {
      const runs = m("onnx_run_seconds_count", { model });
      expect(runs).toBeGreaterThan(100);
      const mean = m("onnx_run_seconds_sum", { model }) / runs;
      expect(mean).toBeGreaterThan(0);
      expect(mean).toBeLessThan(0.5);
    }
    // The Generate that queued behind the hog waited for a while; the others hardly at all.
    expect(m("queue_wait_seconds_count")).toBeGreaterThanOrEqual(6);
    expect(m("queue_wait_seconds_sum")).toBeGreaterThan(0.01);
    expect(m("time_to_first_step_seconds_count")).toBeGreaterThanOrEqual(6);
    expect(m("adapter_version", { version: "base" })).toBe(1);
    expect(m("errors_total", { code: "INVALID_ARGUMENT" })).toBe(1);
    expect(m("errors_total", { code: "CANCELLED" })).toBeGreaterThanOrEqual(1);
    expect(m("errors_total", { code: "DEADLINE_EXCEEDED" })).toBe(1);
    expect(m("sequences_finished_total", { reason: "cancelled" })).toBeGreaterThanOrEqual(2);
    // prom-client's default process metrics are there too.
    expect(metric(s, "process_cpu_user_seconds_total")).toBeGreaterThan(0);
    expect(metric(s, "nodejs_heap_size_used_bytes")).toBeGreaterThan(0);
  });

  it("anything but GET /metrics is a 404", async () => {
    const response = await fetch(`http://127.0.0.1:${server.metricsPort}/`);
    expect(response.status).toBe(404);
  });
});

describe("graceful shutdown", () => {
  it("health goes NOT_SERVING, new work is refused, running streams finish within the deadline", async () => {
    const own = await startServer(pair);
    const ownClient = clients(own);
    // HTTP/2's own 64 KiB window: under the 8 MiB the project's client opens, all 200 FULL steps
    // (about 3 KiB each) could be sent unread and the server be gone before it is looked at.
    const narrow = createClient(InferenceService, own.address, { channelOptions: { "grpc-node.flow_control_window": 65_535 } });
    try {
      expect(await healthStatus(own.address, "")).toBe(SERVING);
      expect(await healthStatus(own.address, "lightreasoner.v1.InferenceService")).toBe(SERVING);
      const call = narrow.streamTrajectories();
      // FULL steps and a reader that waits: the trajectory stays running while we look at the draining server.
      await call.write({ requestId: "finishing", action: { case: "start", value: { prompt: PROMPT, sampling: { temperature: 1, seed: 9, maxNewTokens: 200 }, distributions: FULL32 } } });
      call.end();
      const iterator = call[Symbol.asyncIterator]();
      const seen: StreamTrajectoriesResponse[] = [(await iterator.next()).value];
      const closed = own.close(10_000);
      await sleep(100);
      expect(await healthStatus(own.address, "lightreasoner.v1.InferenceService")).toBe(NOT_SERVING);
      expect(await healthStatus(own.address, "")).toBe(NOT_SERVING);
      const refused = await statusOf(() => collect(ownClient.inference.generate({ prompt: PROMPT, sampling: { maxNewTokens: 2 }, mode: GenerationMode.EXPERT })));
      expect(refused.code).toBe(Status.UNAVAILABLE);
      for (;;) {
        const { value, done } = await iterator.next();
        if (done) break;
        seen.push(value);
      }
      await closed;
      const t = byRequest(seen).get("finishing")!;
      expect([FinishReason.LENGTH, FinishReason.EOS]).toContain(t.finished.end!.finishReason);
      expect(t.steps.length).toBe(t.finished.end!.usage!.completionTokens);
      await expect(ownClient.inference.getModelInfo({}, { timeoutMs: 1000 })).rejects.toMatchObject({ code: expect.any(Number) });
    } finally {
      narrow.close();
      ownClient.close();
      await own.close();
    }
  });

  it("what is still running at the deadline is cancelled, and close returns soon after", async () => {
    const own = await startServer(pair);
    const ownClient = clients(own);
    try {
      const call = ownClient.inference.streamTrajectories();
      await call.write({ requestId: "endless", action: { case: "start", value: long() } });
      call.end();
      const messages = collect(call);
      await sleep(100);
      const started = performance.now();
      await own.close(200);
      expect(performance.now() - started).toBeLessThan(2500);
      const t = byRequest(await messages).get("endless")!;
      expect(t.finished.end!.finishReason).toBe(FinishReason.CANCELLED);
      expect(t.steps.length).toBeLessThan(1000);
    } finally {
      ownClient.close();
      await own.close();
    }
  });
});
