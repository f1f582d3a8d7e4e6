import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { initModel, parameterCount } from "./init-model.ts";
import { parseModelConfig } from "./config.ts";
import { expectedWeights } from "./weights.ts";
import { loadModelDir, modelFingerprint } from "#core/formats/model-dir.ts";
import { TextTokenizer } from "#core/formats/tokenizer.ts";

const root = mkdtempSync(join(tmpdir(), "lr-init-model-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;
const out = (label: string) => join(root, `${label}-${counter++}`);

const TINY_LLAMA = {
  model_type: "llama", vocab_size: 384, hidden_size: 48, intermediate_size: 96, num_hidden_layers: 2,
  num_attention_heads: 6, num_key_value_heads: 2, tie_word_embeddings: false, rms_norm_eps: 1e-5, max_position_embeddings: 256,
};
const TINY_QWEN = {
  model_type: "qwen2", vocab_size: 512, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 3,
  num_attention_heads: 4, num_key_value_heads: 1, tie_word_embeddings: true, rope_theta: 1e6,
};
/** The shape of Qwen2.5-0.5B's config.json. */
const QWEN_05B = {
  architectures: ["Qwen2ForCausalLM"], model_type: "qwen2", vocab_size: 151936, hidden_size: 896, intermediate_size: 4864,
  num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, tie_word_embeddings: true, rope_theta: 1000000,
  rms_norm_eps: 1e-6, max_position_embeddings: 32768, bos_token_id: 151643, eos_token_id: 151643,
};

function stats(data: Float32Array) {
  let sum = 0;
  let sq = 0;
  for (const x of data) {
    sum += x;
    sq += x * x;
  }
  const mean = sum / data.length;
  return { mean, std: Math.sqrt(sq / data.length - mean * mean) };
}

describe("initModel", () => {
  for (const [family, configJson] of [["llama (GQA, untied)", TINY_LLAMA], ["qwen2 (biases, tied)", TINY_QWEN]] as const) {
    it(`writes a ${family} directory that loads through loadModelDir and TextTokenizer`, () => {
      const dir = out("tiny");
      const result = initModel({ configJson, seed: 42, outDir: dir });
      expect(readdirSync(dir).sort()).toEqual(["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]);
      const model = loadModelDir(dir);
      expect(model.config).toEqual(result.config);
      expect(result.parameterCount).toBe([...model.weights.values()].reduce((n, t) => n + t.data.length, 0));

      const embed = stats(model.weights.get("model.embed_tokens.weight")!.data);
      expect(Math.abs(embed.mean)).toBeLessThan(0.002);
      expect(embed.std).toBeGreaterThan(0.018);
      expect(embed.std).toBeLessThan(0.022);
      const norm = model.weights.get("model.layers.1.input_layernorm.weight")!.data;
      expect(Math.abs(stats(norm).mean - 1)).toBeLessThan(0.02);
      expect(norm.some((x) => x !== 1)).toBe(true);
      if (model.config.attentionBias) {
        expect(stats(model.weights.get("model.layers.0.self_attn.k_proj.bias")!.data).std).toBeGreaterThan(0.005);
      }

      const tok = TextTokenizer.load(dir);
      expect(tok.vocabSize).toBe(model.config.vocabSize);
      expect(model.config.bosTokenId).toBe(tok.bosTokenId);
      expect(model.config.eosTokenIds).toEqual([tok.eosTokenId]);
      expect(tok.eosTokenIds).toContain(tok.encode("<|im_end|>", { addSpecialTokens: false })[0]);
      for (let id = 0; id < tok.vocabSize; id++) expect(tok.decodeToken(id).length, `id ${id}`).toBeGreaterThan(0);
      const text = "Natalia sold 48 clips in April — and half as many in May.";
      expect(tok.decode(tok.encode(text), { skipSpecialTokens: true })).toBe(text);
      expect(tok.encode("x")[0] === tok.bosTokenId).toBe(model.config.modelType === "llama");
      const prompt = tok.renderChat([{ role: "user", content: "hi" }], { addGenerationPrompt: true });
      expect(prompt.endsWith("<|im_start|>assistant\n")).toBe(true);
    });
  }

  it("is deterministic in the seed, and the seed matters", () => {
    const [a, b, c] = [out("seed"), out("seed"), out("seed")];
    initModel({ configJson: TINY_QWEN, seed: 5, outDir: a });
    initModel({ configJson: JSON.stringify(TINY_QWEN), seed: 5, outDir: b });
    initModel({ configJson: TINY_QWEN, seed: 6, outDir: c });
    expect(modelFingerprint(a)).toBe(modelFingerprint(b));
    expect(modelFingerprint(a)).not.toBe(modelFingerprint(c));
  });

  it("keeps the token ids a config names and can shard the weights", () => {
    const dir = out("ids");
    initModel({ configJson: { ...TINY_LLAMA, bos_token_id: 382, eos_token_id: [383, 381] }, seed: 1, outDir: dir, shardBytes: 50_000, dtype: "F16" });
    expect(readdirSync(dir)).toContain("model.safetensors.index.json");
    const tok = TextTokenizer.load(dir);
    expect([tok.bosTokenId, tok.eosTokenId]).toEqual([382, 383]);
    expect(tok.tokenString(381)).toBe("<|im_end|>");
    expect(JSON.parse(readFileSync(join(dir, "config.json"), "utf8")).eos_token_id).toEqual([383, 381]);
    expect(loadModelDir(dir).weights.size).toBe(expectedWeights(parseModelConfig(TINY_LLAMA)).size);
  });

  it("refuses a vocabulary too small for a byte-level tokenizer, naming the config", () => {
    expect(() => initModel({ configJson: { ...TINY_QWEN, vocab_size: 100 }, seed: 1, outDir: out("small") })).toThrow(/config\.json: vocab_size 100 is too small/);
  });

  it("counts a Qwen2.5-0.5B-shaped model at its published 494,032,768 parameters (without generating it)", () => {
    const config = parseModelConfig(QWEN_05B);
    expect(parameterCount(config)).toBe(494_032_768);
    expect(expectedWeights(config).size).toBe(24 * 12 + 2);
    expect(parameterCount(parseModelConfig({ ...QWEN_05B, tie_word_embeddings: false }))).toBe(494_032_768 + 151936 * 896);
  });
});
