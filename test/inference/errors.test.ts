// Bad input and limits over a real socket: every bad field gets the status the contract
// names and a message naming the field; inside a multiplexed call only the bad trajectory
// fails; too many streams is RESOURCE_EXHAUSTED; the server keeps serving everyone else;
// and a pair that does not share a tokenizer is refused at start-up with the difference named.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Status } from "#core/grpc/adapter.ts";
import { ChatRole, DistributionEncoding, FinishReason, FloatDtype } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { GenerationMode } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import type { InferenceServer } from "#inference/main.ts";
import { MismatchedPairError } from "#inference/engine/errors.ts";
import { byRequest, clients, collect, idsPrompt, metric, scrape, sleep, sparse, startServer, statusOf, textPrompt, writeTinyPair } from "./helpers.ts";
import type { TinyPair } from "./helpers.ts";

const LIMITS = { maxPromptTokens: 32, maxNewTokens: 64, defaultMaxNewTokens: 16, maxStreams: 3, maxTrajectoriesPerStream: 2, maxStopStrings: 2, maxTopK: 8 };

let pair: TinyPair;
let server: InferenceServer;
let client: ReturnType<typeof clients>;

beforeAll(async () => {
  pair = writeTinyPair();
  server = await startServer(pair, { limits: LIMITS });
  client = clients(server);
});

afterAll(async () => {
  client?.close();
  await server?.close(1000);
  pair?.remove();
});

const good = { prompt: idsPrompt([2, 77, 350]), sampling: { maxNewTokens: 4 }, mode: GenerationMode.EXPERT };
const chat = (messages: { role: ChatRole; content: string }[], systemPrompt = "") => ({ source: { case: "chat" as const, value: { systemPrompt, messages } } });

describe("Generate refuses bad input before sending anything, naming the field", () => {
  it.each([
    ["no prompt", { ...good, prompt: undefined }, "prompt"],
    ["empty text", { ...good, prompt: textPrompt("") }, "prompt.text"],
    ["no token ids", { ...good, prompt: idsPrompt([]) }, "prompt.token_ids.ids"],
    ["a token id outside the vocabulary", { ...good, prompt: idsPrompt([2, 384, 5]) }, "prompt.token_ids.ids[1]"],
    ["an oversized prompt", { ...good, prompt: idsPrompt(Array(33).fill(7)) }, "prompt"],
    ["an oversized text prompt", { ...good, prompt: textPrompt("many words ".repeat(40)) }, "prompt"],
    ["a chat message without a role", { ...good, prompt: chat([{ role: ChatRole.UNSPECIFIED, content: "hi" }]) }, "prompt.chat.messages[0].role"],
    ["a chat without messages", { ...good, prompt: chat([]) }, "prompt.chat.messages"],
    ["two system prompts", { ...good, prompt: chat([{ role: ChatRole.SYSTEM, content: "a" }], "b") }, "prompt.chat.system_prompt"],
    ["max_new_tokens above the limit", { ...good, sampling: { maxNewTokens: 65 } }, "sampling.max_new_tokens"],
    ["a negative temperature", { ...good, sampling: { temperature: -0.5 } }, "sampling.temperature"],
    ["a NaN temperature", { ...good, sampling: { temperature: Number.NaN } }, "sampling.temperature"],
    ["top_p above 1", { ...good, sampling: { topP: 1.5 } }, "sampling.top_p"],
    ["top_p of 0", { ...good, sampling: { topP: 0 } }, "sampling.top_p"],
    ["too many stop strings", { ...good, sampling: { stopStrings: ["a", "b", "c"] } }, "sampling.stop_strings"],
    ["an empty stop string", { ...good, sampling: { stopStrings: ["a", ""] } }, "sampling.stop_strings[1]"],
    ["no mode", { ...good, mode: GenerationMode.UNSPECIFIED }, "mode"],
    ["an unknown mode", { ...good, mode: 42 as GenerationMode }, "mode"],
    ["a contrastive alpha of 0", { ...good, mode: GenerationMode.CONTRASTIVE, alpha: 0 }, "alpha"],
  ])("%s: INVALID_ARGUMENT naming %#", async (_what, request, field) => {
    const err = await statusOf(() => collect(client.inference.generate(request as typeof good)));
    expect(err.code).toBe(Status.INVALID_ARGUMENT);
    expect(err.field).toBe(field);
    expect(err.message.startsWith(`${field}: `)).toBe(true);
  });
});

describe("Score refuses bad input", () => {
  it("a first position beyond the sequence, or no distributions", async () => {
    const beyond = await statusOf(() => collect(client.inference.score({ prompt: idsPrompt([2, 3, 4]), firstPosition: 4, distributions: sparse() })));
    expect([beyond.code, beyond.field]).toEqual([Status.INVALID_ARGUMENT, "first_position"]);
    const none = await statusOf(() => collect(client.inference.score({ prompt: idsPrompt([2, 3, 4]), distributions: { encoding: DistributionEncoding.NONE } })));
    expect([none.code, none.field]).toEqual([Status.INVALID_ARGUMENT, "distributions.encoding"]);
  });
});

describe("StreamTrajectories: a bad trajectory ends only itself", () => {
  const start = (distributions: object, extra: object = {}) => ({ prompt: idsPrompt([2, 77, 350]), sampling: { maxNewTokens: 6 }, distributions, ...extra });

  it.each([
    ["no encoding", { encoding: DistributionEncoding.UNSPECIFIED }, "distributions.encoding"],
    ["an unknown encoding", { encoding: 17 }, "distributions.encoding"],
    ["an unknown dtype", { encoding: DistributionEncoding.FULL, dtype: 9 as FloatDtype }, "distributions.dtype"],
    ["alpha of 0", sparse(0), "distributions.alpha"],
    ["alpha above 1", sparse(1.5), "distributions.alpha"],
    ["top_k above the limit", sparse(0.2, 9), "distributions.top_k"],
  ])("%s: FINISH_REASON_ERROR with INVALID_ARGUMENT naming the field, while a good one runs on", async (_what, distributions, field) => {
    const call = client.inference.streamTrajectories();
    await call.write({ requestId: "good", action: { case: "start", value: start(sparse()) } });
    await call.write({ requestId: "bad", action: { case: "start", value: start(distributions) } });
    call.end();
    const byId = byRequest(await collect(call));
    const bad = byId.get("bad")!;
    expect(bad.events.map((e) => e.event.case)).toEqual(["finished"]);
    expect(bad.finished.end!.finishReason).toBe(FinishReason.ERROR);
    expect(bad.finished.error).toMatchObject({ code: Status.INVALID_ARGUMENT, field });
    expect(bad.finished.error!.message.startsWith(`${field}: `)).toBe(true);
    expect(byId.get("good")!.finished.end!.finishReason).not.toBe(FinishReason.ERROR);
    expect(byId.get("good")!.steps.length).toBeGreaterThan(0);
  });

  it("more unfinished trajectories than the per-call limit: RESOURCE_EXHAUSTED for the extra one", async () => {
    const call = client.inference.streamTrajectories();
    for (const id of ["a", "b", "c"]) await call.write({ requestId: id, action: { case: "start", value: start(sparse(), { sampling: { maxNewTokens: 40 } }) } });
    call.end();
    const byId = byRequest(await collect(call));
    expect(byId.get("c")!.finished.error).toMatchObject({ code: Status.RESOURCE_EXHAUSTED, field: "request_id" });
    expect(byId.get("a")!.steps.length).toBeGreaterThan(0);
    expect(byId.get("b")!.steps.length).toBeGreaterThan(0);
  });

  it.each([
    ["an empty request id", [{ requestId: "", action: { case: "start", value: start(sparse()) } }], "request_id"],
    ["a request id in use", [{ requestId: "x", action: { case: "start", value: start(sparse(), { sampling: { maxNewTokens: 60 } }) } }, { requestId: "x", action: { case: "start", value: start(sparse()) } }], "request_id"],
    ["a request id too long", [{ requestId: "r".repeat(129), action: { case: "cancel", value: {} } }], "request_id"],
    ["no action", [{ requestId: "y" }], "action"],
  ])("a malformed stream (%s) ends the call with INVALID_ARGUMENT", async (_what, messages, field) => {
    const call = client.inference.streamTrajectories();
    for (const m of messages) await call.write(m as never);
    const err = await statusOf(() => collect(call));
    expect([err.code, err.field]).toEqual([Status.INVALID_ARGUMENT, field]);
  });
});

describe("limits on calls", () => {
  it("one call beyond max_streams is RESOURCE_EXHAUSTED; freed slots are usable again", async () => {
    // Open calls hold their slot until they end; a cancel for an unknown id is ignored.
    const held = [client.inference.streamTrajectories(), client.inference.streamTrajectories(), client.inference.streamTrajectories()];
    for (const call of held) await call.write({ requestId: "none", action: { case: "cancel", value: {} } });
    const readers = held.map((call) => collect(call));
    await sleep(100);
    const refused = await statusOf(() => collect(client.inference.generate(good)));
    expect(refused.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(refused.message).toContain("limit 3");
    for (const call of held) call.end();
    await Promise.all(readers);
    const ok = await collect(client.inference.generate(good));
    expect(ok.at(-1)!.event.case).toBe("finished");
  });

  it("errors are counted by status code, and the server still serves", async () => {
    const samples = await scrape(server);
    expect(metric(samples, "lightreasoner_inference_errors_total", { code: "INVALID_ARGUMENT" })).toBeGreaterThan(20);
    expect(metric(samples, "lightreasoner_inference_errors_total", { code: "RESOURCE_EXHAUSTED" })).toBeGreaterThanOrEqual(2);
    expect(metric(samples, "lightreasoner_inference_requests_total", { method: "InferenceService/Generate", code: "OK" })).toBeGreaterThanOrEqual(1);
    const info = await client.inference.getModelInfo({});
    expect(info.limits).toMatchObject(LIMITS);
  });
});

describe("start-up", () => {
  it("refuses a pair with different vocabularies, naming the difference", async () => {
    const mismatched = writeTinyPair({ amateur: { vocab_size: 320 } });
    try {
      const started = startServer(mismatched);
      await expect(started).rejects.toBeInstanceOf(MismatchedPairError);
      await expect(started).rejects.toThrow("vocabulary size: 384 vs 320");
      await expect(started).rejects.toThrow("logits width differs: expert 384, amateur 320");
    } finally {
      mismatched.remove();
    }
  });

  it("refuses a pair whose special tokens differ", async () => {
    const mismatched = writeTinyPair({ amateur: { eos_token_id: 5 } });
    try {
      await expect(startServer(mismatched)).rejects.toThrow(/eos token: 0 \("<\|endoftext\|>"\) vs 5/);
    } finally {
      mismatched.remove();
    }
  });
});
