import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { compareTokenizers, TextTokenizer } from "./tokenizer.ts";
import { buildSyntheticTokenizer, ENDOFTEXT, IM_END } from "./synthetic-tokenizer.ts";
import { ChatTemplateError } from "./chat-template.ts";
import { ModelFormatError } from "#core/model/errors.ts";
import { SeededRandom } from "#core/math/random.ts";

const LLAMA2 = resolve(process.cwd(), "../shared/fixtures/ort-genai-tiny-random-llama-fp16");
const root = mkdtempSync(join(tmpdir(), "lr-tokenizer-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function synthetic(vocabSize: number, extra: Partial<Parameters<typeof buildSyntheticTokenizer>[0]> = {}, withTemplate = true): TextTokenizer {
  const built = buildSyntheticTokenizer({ vocabSize, addBos: false, source: "config.json", ...extra });
  const config = { ...built.tokenizerConfig };
  if (!withTemplate) delete (config as Record<string, unknown>).chat_template;
  return TextTokenizer.fromObjects(built.tokenizerJson, config, "synthetic/tokenizer.json", { extraEosTokenIds: built.generationConfig.eos_token_id as number[] });
}

describe.skipIf(!existsSync(LLAMA2))("the real Llama-2 tokenizer (../shared fixture)", () => {
  const tok = existsSync(LLAMA2) ? TextTokenizer.load(LLAMA2) : (null as unknown as TextTokenizer);

  it("knows its vocabulary and special tokens", () => {
    expect(tok.vocabSize).toBe(32000);
    expect(tok.specialTokens).toEqual({ bos: 1, eos: 2, pad: 0, unk: 0 });
    expect(tok.eosTokenIds).toEqual([2]);
    expect(tok.addsSpecialTokens).toBe(true);
    expect(tok.tokenString(15043)).toBe("▁Hello");
  });

  it("finds special tokens among the added tokens when tokenizer_config.json does not name them", () => {
    const json = JSON.parse(readFileSync(join(LLAMA2, "tokenizer.json"), "utf8"));
    const bare = TextTokenizer.fromObjects(json, {}, "bare/tokenizer.json");
    expect(bare.specialTokens).toEqual({ bos: 1, eos: 2, pad: null, unk: 0 });
    expect(bare.chatTemplate).toBeNull();
  });

  it("encodes with and without BOS to the known ids", () => {
    expect(tok.encode("Hello world")).toEqual([1, 15043, 3186]);
    expect(tok.encode("Hello world", { addSpecialTokens: false })).toEqual([15043, 3186]);
  });

  it("round-trips a sentence with accents and an emoji (byte fallback)", () => {
    const text = "Once upon a time, Lily saw a big, red ball — ünïcödé and 😀!";
    const ids = tok.encode(text);
    expect(ids).toEqual(expect.arrayContaining([243, 162, 155, 131])); // <0xF0> <0x9F> <0x98> <0x80>
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe(text);
    expect(tok.decode(ids)).toBe(`<s> ${text}`);
  });

  it("gives the text of single tokens, bytes for byte-fallback pieces, and joins them when streamed", () => {
    expect(tok.decodeToken(15043)).toBe(" Hello");
    expect(tok.decodeToken(1)).toBe("<s>");
    expect(Array.from(tok.tokenBytes(243))).toEqual([0xf0]);
    expect(tok.decodeToken(243)).toBe("\uFFFD");
    const stream = tok.streamDecoder({ skipSpecialTokens: true });
    const pieces = tok.encode("a 😀b").map((id) => stream.push(id));
    expect(pieces.join("") + stream.end()).toBe(" a 😀b");
    expect(pieces.filter((p) => p === "").length).toBeGreaterThanOrEqual(3); // the emoji waited for its last byte
  });

  it("drops ids outside the vocabulary when decoding", () => {
    expect(tok.decode([15043, 32000, 99999, -1])).toBe("Hello");
    expect(tok.decode([])).toBe("");
  });

  it("renders its chat template and surfaces the template's own errors", () => {
    const prompt = tok.renderChat(
      [
        { role: "user", content: "Hi" },
        { role: "assistant", content: "Hello" },
        { role: "user", content: "Bye" },
      ],
      { addGenerationPrompt: true },
    );
    expect(prompt).toBe("<s>[INST] Hi [/INST] Hello </s><s>[INST] Bye [/INST]");
    const err = (() => {
      try {
        tok.renderChat([{ role: "assistant", content: "x" }]);
      } catch (e) {
        return e as ChatTemplateError;
      }
    })();
    expect(err).toBeInstanceOf(ChatTemplateError);
    expect(err!.message).toMatch(/tokenizer_config\.json: chat template failed: Conversation roles must alternate/);
  });

  it("lists how it differs from another tokenizer", () => {
    expect(compareTokenizers(tok, tok)).toEqual([]);
    const other = synthetic(32000);
    const diffs = compareTokenizers(tok, other);
    expect(diffs[0]).toBe('token 0: "<unk>" vs "<|endoftext|>"');
    expect(diffs).toContain("... 31995 more ids differ (32000 of 32000)");
    expect(diffs).toContain('eos token: 2 ("</s>") vs 0 ("<|endoftext|>")');
  });
});

describe("the byte-level tokenizer init-model writes", () => {
  it("decodes every id to some text and round-trips any text", () => {
    const tok = synthetic(2000);
    expect(tok.vocabSize).toBe(2000);
    for (let id = 0; id < tok.vocabSize; id++) expect(tok.tokenBytes(id).length, `id ${id}`).toBeGreaterThan(0);
    const rng = new SeededRandom(3);
    const samples = ["", "plain words, digits 0123 and\nnew lines\ttabs", "ünïcödé 日本語 😀🚀", "<|im_start|> inside text"];
    for (let k = 0; k < 20; k++) samples.push(String.fromCodePoint(...Array.from({ length: 30 }, () => 1 + rng.int(0x2fff))));
    for (const text of samples) {
      const ids = tok.encode(text, { addSpecialTokens: false });
      expect(ids.every((id) => id >= 0 && id < 2000)).toBe(true);
      expect(tok.decode(ids)).toBe(text);
      const stream = tok.streamDecoder();
      expect(ids.map((id) => stream.push(id)).join("") + stream.end()).toBe(text);
    }
  });

  it("merges frequent characters, so English needs fewer tokens than bytes", () => {
    const tok = synthetic(3000);
    const text = "the cat sat on the mat and then ate the rest of the toast";
    expect(tok.encode(text).length).toBeLessThan(text.length / 1.5);
  });

  it("puts special tokens at the ids config.json names and the rest at the lowest free ids", () => {
    const tok = synthetic(1000, { bosTokenId: 998, eosTokenIds: [998, 999] });
    expect(tok.tokenString(998)).toBe(ENDOFTEXT);
    expect(tok.tokenString(999)).toBe(IM_END);
    expect(tok.specialTokens.bos).toBe(998);
    expect(tok.specialTokens.pad).toBe(0);
    expect(tok.eosTokenIds.sort()).toEqual([998, 999]);
    expect(tok.isSpecial(999)).toBe(true);
    expect(tok.decode([998, 5, 999], { skipSpecialTokens: true })).toBe(tok.decodeToken(5));
  });

  it("prepends BOS only for the llama family", () => {
    const llama = synthetic(400, { addBos: true });
    expect(llama.encode("hi")[0]).toBe(llama.specialTokens.bos);
    expect(llama.addsSpecialTokens).toBe(true);
    const qwen = synthetic(400);
    expect(qwen.encode("hi")).toEqual(qwen.encode("hi", { addSpecialTokens: false }));
  });

  it("refuses a vocabulary too small for the 256 bytes and an id outside it", () => {
    expect(() => synthetic(200)).toThrow(/config\.json: vocab_size 200 is too small/);
    expect(() => synthetic(400, { eosTokenIds: [400] })).toThrow(/"eos_token_id" 400 is outside the vocabulary \[0, 400\)/);
  });

  it("strips spaces before punctuation only where the config asks and the model is not BPE (as transformers 5)", () => {
    const wordPiece = {
      model: { type: "WordPiece", vocab: { "[UNK]": 0, hello: 1, ".": 2 }, unk_token: "[UNK]", continuing_subword_prefix: "##" },
      pre_tokenizer: { type: "WhitespaceSplit" },
      decoder: { type: "WordPiece", prefix: "##", cleanup: false },
    };
    expect(TextTokenizer.fromObjects(wordPiece, { clean_up_tokenization_spaces: true }, "wp/tokenizer.json").decode([1, 2])).toBe("hello.");
    // Absent means no clean-up (@huggingface/tokenizers alone would default to it).
    expect(TextTokenizer.fromObjects(wordPiece, {}, "wp/tokenizer.json").decode([1, 2])).toBe("hello .");
    const built = buildSyntheticTokenizer({ vocabSize: 400, addBos: false, source: "x" });
    const bpe = TextTokenizer.fromObjects(built.tokenizerJson, { ...built.tokenizerConfig, clean_up_tokenization_spaces: true }, "bpe/tokenizer.json");
    expect(bpe.cleansUpSpaces).toBe(false);
    expect(bpe.decode(bpe.encode("a . b ,"))).toBe("a . b ,");
  });

  it("compares tokenizers of different sizes", () => {
    // Sizes share their ids' tokens (a smaller vocabulary is a prefix of a larger one)...
    expect(compareTokenizers(synthetic(300), synthetic(320))).toEqual(["vocabulary size: 300 vs 320"]);
    // ...until a config moves the special tokens.
    const moved = compareTokenizers(synthetic(300), synthetic(300, { eosTokenIds: [299] }));
    expect(moved.slice(0, 2)).toEqual(['token 0: "<|endoftext|>" vs "<|im_end|>"', 'token 1: "<|im_end|>" vs "<|startoftext|>"']);
    expect(moved).toContain('eos token: 0 ("<|endoftext|>") vs 299 ("<|endoftext|>")');
    expect(compareTokenizers(synthetic(300), synthetic(300))).toEqual([]);
  });

  it("renders the ChatML template, and says so when a model has none", () => {
    const tok = synthetic(400);
    expect(tok.renderChat([{ role: "user", content: "2+2?" }], { addGenerationPrompt: true })).toBe(
      "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n",
    );
    const bare = synthetic(400, {}, false);
    expect(() => bare.renderChat([{ role: "user", content: "x" }])).toThrow(ModelFormatError);
    expect(() => bare.renderChat([{ role: "user", content: "x" }])).toThrow(/synthetic\/tokenizer_config\.json: the model has no chat template/);
  });
});

describe("tokenizer files", () => {
  it("names a missing tokenizer.json", () => {
    const dir = join(root, "empty");
    mkdirSync(dir);
    expect(() => TextTokenizer.load(dir)).toThrow(`${join(dir, "tokenizer.json")}: missing`);
  });

  it("names a malformed tokenizer.json and an unsupported model type", () => {
    const dir = join(root, "bad");
    mkdirSync(dir);
    writeFileSync(join(dir, "tokenizer.json"), "{");
    expect(() => TextTokenizer.load(dir)).toThrow(/tokenizer\.json: cannot read tokenizer\.json/);
    writeFileSync(join(dir, "tokenizer.json"), JSON.stringify({ model: { type: "Mystery" } }));
    expect(() => TextTokenizer.load(dir)).toThrow(/tokenizer\.json: unsupported or malformed tokenizer: Unknown TokenizerModel type: Mystery/);
  });

  it("reads the chat template from chat_template.jinja and extra eos ids from generation_config.json", () => {
    const dir = join(root, "jinja");
    mkdirSync(dir);
    const built = buildSyntheticTokenizer({ vocabSize: 300, addBos: false, source: "x" });
    const { chat_template: _unused, ...config } = built.tokenizerConfig;
    writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(built.tokenizerJson));
    writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(config));
    writeFileSync(join(dir, "chat_template.jinja"), "{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}");
    writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: [built.ids.eos, 7] }));
    const tok = TextTokenizer.load(dir);
    expect(tok.renderChat([{ role: "user", content: "hey" }])).toBe("[user] hey");
    expect(tok.eosTokenIds).toEqual([built.ids.eos, 7]);
  });
});
