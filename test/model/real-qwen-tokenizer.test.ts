// A model directory that a user assembles: random weights of the Qwen vocabulary (151,936
// logits, from init-model) next to the real Qwen3 tokenizer files, served by the inference
// service over a real loopback socket. The chat prompt must reach the models as the ids the
// Rust tokenizers library gives, and the streamed text must be what the tokenizer decodes.
//
// The unit-test pair is small (32 and 16 wide, 2 and 1 layers) but has the full vocabulary, so
// the tokenizer, the logits width and the streamed distributions are those of the real model.
// The same checks at the 0.5B shape (README, "Bringing a real tokenizer"):
//   LIGHTREASONER_REAL_TOKENIZER_PAIR=<dir with expert/ and amateur/> npx vitest run test/model/real-qwen-tokenizer.test.ts
// There the given directories' model.safetensors are linked, not copied, and paired with the
// real tokenizer files.
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChatRole, FinishReason } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { GenerationMode } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { TextTokenizer } from "#core/formats/tokenizer.ts";
import { initModel } from "#core/model/init-model.ts";
import { processMemory } from "#core/metrics/process-memory.ts";
import type { InferenceServer } from "#inference/main.ts";
import { FULL32, byRequest, clients, collect, fullOf, startServer } from "#test/inference/helpers.ts";
import { QUESTION, QWEN3_CHAT_IDS, QWEN3_TOKENIZER_DIR, SYSTEM_PROMPT } from "#test/formats/real-tokenizers.ts";

const QWEN_VOCAB = 151936;
/** Qwen2.5-Instruct's own ids: <|endoftext|> begins and pads, <|im_end|> and <|endoftext|> end generation. */
const QWEN_IDS = { bos_token_id: 151643, eos_token_id: [151645, 151643], pad_token_id: 151643 };
const SMALL = {
  model_type: "qwen2",
  vocab_size: QWEN_VOCAB,
  intermediate_size: 64,
  max_position_embeddings: 1024,
  rope_theta: 1000000,
  rms_norm_eps: 1e-6,
  tie_word_embeddings: true,
  // Wide weights make the random models' distributions peaked, as trained models' are.
  initializer_range: 0.3,
  ...QWEN_IDS,
};
const atScale = process.env.LIGHTREASONER_REAL_TOKENIZER_PAIR;

const root = mkdtempSync(join(tmpdir(), "lr-real-qwen-"));
const qwen = TextTokenizer.load(QWEN3_TOKENIZER_DIR);

function withRealTokenizer(dir: string): void {
  for (const file of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(QWEN3_TOKENIZER_DIR, file), join(dir, file));
}

/** A directory with the weights of `source` linked in, its config given Qwen's token ids, and the real tokenizer. */
function linkedModel(source: string, dir: string): void {
  mkdirSync(dir);
  const config = JSON.parse(readFileSync(join(source, "config.json"), "utf8"));
  writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, ...QWEN_IDS }, null, 2));
  writeFileSync(join(dir, "generation_config.json"), JSON.stringify(QWEN_IDS, null, 2));
  // The safetensors file, which the service's graph reads in place (no JavaScript copy of the weights).
  symlinkSync(join(source, "model.safetensors"), join(dir, "model.safetensors"));
  withRealTokenizer(dir);
}

function writePair(): { expertDir: string; amateurDir: string } {
  const expertDir = join(root, "expert");
  const amateurDir = join(root, "amateur");
  if (atScale) {
    linkedModel(resolve(atScale, "expert"), expertDir);
    linkedModel(resolve(atScale, "amateur"), amateurDir);
  } else {
    initModel({ configJson: { ...SMALL, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1 }, seed: 5, outDir: expertDir });
    initModel({ configJson: { ...SMALL, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 }, seed: 6, outDir: amateurDir });
    withRealTokenizer(expertDir);
    withRealTokenizer(amateurDir);
  }
  return { expertDir, amateurDir };
}

const chat = { source: { case: "chat" as const, value: { systemPrompt: SYSTEM_PROMPT, messages: [{ role: ChatRole.USER, content: QUESTION }] } } };

let server: InferenceServer;
let client: ReturnType<typeof clients>;
let loadSeconds = 0;

beforeAll(async () => {
  const started = performance.now();
  server = await startServer(writePair());
  loadSeconds = (performance.now() - started) / 1000;
  client = clients(server);
});

afterAll(async () => {
  client?.close();
  await server?.close(1000);
  rmSync(root, { recursive: true, force: true });
  if (atScale) console.log(`real tokenizer at scale: load ${loadSeconds.toFixed(1)} s, peak RSS ${(processMemory(process.pid).peakRssBytes / 2 ** 30).toFixed(2)} GiB`);
});

describe("an init-model pair of the Qwen vocabulary with the real Qwen tokenizer", () => {
  it("loads, and reports the tokenizer's ids and the model's logits width", async () => {
    const info = await client.inference.getModelInfo({});
    expect(info.vocabSize).toBe(QWEN_VOCAB);
    expect(info.tokenizer).toMatchObject({ size: 151669, eosTokenIds: [151645, 151643], padTokenId: 151643, hasChatTemplate: true });
    // Qwen's tokenizer adds no BOS when encoding, so none is reported.
    expect(info.tokenizer!.bosTokenId).toBeUndefined();
  });

  it("streams a trajectory whose prompt is the Rust reference's ids and whose steps carry full distributions", async () => {
    const call = client.inference.streamTrajectories();
    await call.write({ requestId: "gsm8k", action: { case: "start", value: { prompt: chat, sampling: { temperature: 1, seed: 3, maxNewTokens: 6 }, distributions: FULL32 } } });
    call.end();
    const t = byRequest(await collect(call)).get("gsm8k")!;
    expect(t.promptIds).toEqual(QWEN3_CHAT_IDS);
    expect(t.events[0].event.value).toMatchObject({
      promptText: `<|im_start|>system\nPlease reason step by step.<|im_end|>\n<|im_start|>user\n${QUESTION}<|im_end|>\n<|im_start|>assistant\n`,
    });
    expect(t.steps.length).toBeGreaterThan(0);
    for (const step of t.steps) {
      const { expert, amateur } = fullOf(step.scored);
      expect([expert.length, amateur.length]).toEqual([QWEN_VOCAB, QWEN_VOCAB]);
      // Log-probabilities: the expert's mass sums to one and the sampled token has some of it.
      expect(expert.reduce((sum, lp) => sum + Math.exp(lp), 0)).toBeCloseTo(1, 3);
      expect(Number.isFinite(expert[step.scored.tokenId])).toBe(true);
    }
    const ids = t.steps.map((s) => s.scored.tokenId);
    expect(t.finished.completionText).toBe(t.steps.map((s) => s.tokenText).join(""));
    expect(t.finished.completionText).toBe(qwen.decode(ids));
  });

  it("generates text that is the tokenizer's decoding of the generated ids", async () => {
    const messages = await collect(client.inference.generate({ prompt: chat, sampling: { temperature: 1, seed: 11, maxNewTokens: 24 }, mode: GenerationMode.EXPERT }));
    const finished = messages.at(-1)!.event;
    expect(finished.case).toBe("finished");
    const chunks = messages.slice(0, -1).map((m) => m.event.value as { text: string; tokenIds: number[] });
    const ids = chunks.flatMap((c) => c.tokenIds);
    const text = chunks.map((c) => c.text).join("");
    expect(ids.length).toBeGreaterThan(0);
    if (finished.case === "finished") {
      expect(finished.value.end!.usage?.promptTokens).toBe(QWEN3_CHAT_IDS.length);
      expect([FinishReason.LENGTH, FinishReason.EOS]).toContain(finished.value.end!.finishReason);
    }
    // Streamed piece by piece from token bytes (a character split across tokens waits for its
    // last byte), yet equal to decoding the whole sequence at once.
    expect(text).toBe(qwen.decode(ids));
  });
});
