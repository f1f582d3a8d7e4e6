// An ONNX model this project did not export, served as both expert and amateur: ONNX Runtime
// GenAI's tiny random Llama with float16 logits and KV cache and the real Llama-2 tokenizer
// (see ../shared/fixtures/README.md). Trajectories stream with both encodings, text is
// generated, Llama-2's chat template is applied, and adapters are refused for want of weights.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Status } from "#core/grpc/adapter.ts";
import { ChatRole, FinishReason } from "#core/gen/lightreasoner/v1/common_pb.ts";
import type { SparseDistributions } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { GenerationMode } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import type { InferenceServer } from "#inference/main.ts";
import { CausalLmSession } from "#inference/model/session.ts";
import { FULL16, FULL32, byRequest, clients, collect, fullForward, fullOf, maxAbsDiff, sparse, startServer, statusOf, textPrompt } from "./helpers.ts";

const dir = join(process.cwd(), "..", "shared", "fixtures", "ort-genai-tiny-random-llama-fp16");
/** float16 logits and KV carry about 3 decimal digits; incremental and full paths round differently. */
const FP16_TOLERANCE = 2e-3;

describe.skipIf(!existsSync(join(dir, "model.onnx")))("ORT GenAI tiny random Llama (float16) as expert and amateur (needs ../shared)", () => {
  let server: InferenceServer;
  let client: ReturnType<typeof clients>;
  let direct: CausalLmSession;

  beforeAll(async () => {
    server = await startServer({ expertDir: dir, amateurDir: dir });
    client = clients(server);
    direct = await CausalLmSession.open(join(dir, "model.onnx"), { executionProvider: "cpu", threads: 1 });
  });

  afterAll(async () => {
    client?.close();
    await server?.close(1000);
    await direct?.release();
  });

  it("describes what it serves: a float16 ONNX graph and the Llama-2 tokenizer", async () => {
    const info = await client.inference.getModelInfo({});
    expect(info.vocabSize).toBe(32000);
    expect(info.expert).toMatchObject({ name: "ort-genai-tiny-random-llama-fp16", modelType: "llama", numLayers: 2, hiddenSize: 16, maxContextTokens: 2048, source: "onnx", executionProvider: "cpu" });
    expect(info.expert!.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(info.expert!.fingerprint).toBe(info.amateur!.fingerprint);
    expect(info.tokenizer).toMatchObject({ size: 32000, bosTokenId: 1, eosTokenIds: [2], hasChatTemplate: true });
  });

  it("streams trajectories: FULL equals a full forward of the graph, SPARSE sees two identical models", async () => {
    const call = client.inference.streamTrajectories();
    const prompt = textPrompt("Once upon a time, there was a little");
    await call.write({ requestId: "full", action: { case: "start", value: { prompt, sampling: { temperature: 0, maxNewTokens: 12 }, distributions: FULL32 } } });
    await call.write({ requestId: "half", action: { case: "start", value: { prompt, sampling: { temperature: 0, maxNewTokens: 12 }, distributions: FULL16 } } });
    await call.write({ requestId: "sparse", action: { case: "start", value: { prompt, sampling: { temperature: 0, maxNewTokens: 12 }, distributions: sparse(0.2, 3) } } });
    call.end();
    const byId = byRequest(await collect(call));

    const full = byId.get("full")!;
    expect(full.promptIds[0]).toBe(1); // Llama-2 adds BOS to a text prompt
    expect(full.steps.length).toBeGreaterThan(3);
    const rows = await fullForward(direct, [...full.promptIds, ...full.steps.map((s) => s.scored.tokenId)]);
    for (const step of full.steps) {
      const { expert, amateur } = fullOf(step.scored);
      expect(expert.length).toBe(32000);
      expect(maxAbsDiff(expert, rows[step.scored.position - 1])).toBeLessThan(FP16_TOLERANCE);
      expect(maxAbsDiff(amateur, expert)).toBeLessThan(FP16_TOLERANCE);
    }
    expect(full.finished.completionText).toBe(full.steps.map((s) => s.tokenText).join(""));

    const half = byId.get("half")!;
    for (const step of half.steps) expect((step.scored.distributions.value as { expertLogProbs: Uint8Array }).expertLogProbs.length).toBe(64000);

    const summary = byId.get("sparse")!;
    expect(summary.steps.map((s) => s.scored.tokenId)).toEqual(half.steps.map((s) => s.scored.tokenId));
    for (const step of summary.steps) {
      const s = step.scored.distributions.value as SparseDistributions;
      // The same graph on both sides: no disagreement to learn from.
      expect(s.klDivergence).toBeLessThan(1e-6);
      expect(s.plausibleTokenIds[0]).toBe(step.scored.tokenId);
      expect(s.expertEntropy).toBeGreaterThan(0);
      expect(s.expertEntropy).toBeLessThanOrEqual(Math.log(32000));
    }
  });

  it("generates text, and contrastive decoding of a model against itself is its greedy choice", async () => {
    const request = { prompt: textPrompt("The capital of France is"), sampling: { temperature: 0, maxNewTokens: 12 } };
    const expert = await collect(client.inference.generate({ ...request, mode: GenerationMode.EXPERT }));
    const contrastive = await collect(client.inference.generate({ ...request, mode: GenerationMode.CONTRASTIVE }));
    const text = (messages: typeof expert) => messages.flatMap((m) => (m.event.case === "chunk" ? [m.event.value.text] : [])).join("");
    const ids = (messages: typeof expert) => messages.flatMap((m) => (m.event.case === "chunk" ? m.event.value.tokenIds : []));
    expect(text(expert).length).toBeGreaterThan(0);
    expect(ids(expert).length).toBeGreaterThan(0);
    expect(ids(contrastive)).toEqual(ids(expert));
    const finished = expert.at(-1)!.event;
    expect(finished.case).toBe("finished");
    expect([FinishReason.LENGTH, FinishReason.EOS]).toContain(finished.case === "finished" ? finished.value.end?.finishReason : undefined);
  });

  it("renders chat prompts with Llama-2's template, and reports the template's refusal as INVALID_ARGUMENT", async () => {
    const chat = (roles: ChatRole[]) => ({ source: { case: "chat" as const, value: { systemPrompt: "", messages: roles.map((role) => ({ role, content: "Hi there" })) } } });
    const call = client.inference.streamTrajectories();
    await call.write({ requestId: "chat", action: { case: "start", value: { prompt: chat([ChatRole.USER]), sampling: { maxNewTokens: 3 }, distributions: sparse() } } });
    call.end();
    const t = byRequest(await collect(call)).get("chat")!;
    expect((t.events[0].event.value as { promptText: string }).promptText).toBe("<s>[INST] Hi there [/INST]");
    const refused = await statusOf(() => collect(client.inference.generate({ prompt: chat([ChatRole.USER, ChatRole.USER]), sampling: { maxNewTokens: 3 }, mode: GenerationMode.EXPERT })));
    expect([refused.code, refused.field]).toEqual([Status.INVALID_ARGUMENT, "prompt.chat.messages"]);
    expect(refused.message).toContain("Conversation roles must alternate");
  });

  it("refuses adapters: there are no Hugging Face weights to merge them into", async () => {
    const upload = client.adapters.uploadAdapter();
    await upload.write({ part: { case: "header", value: { adapterConfigJson: '{"peft_type":"LORA"}', safetensorsSize: 0 } } });
    const err = await statusOf(() => upload.end());
    expect(err.code).toBe(Status.FAILED_PRECONDITION);
    expect(err.message).toContain("without Hugging Face weights");
  });
});
