import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";
import { describe, expect, it } from "vitest";
import { generateProblems } from "./arithmetic.ts";
import { renderWorldSequence } from "./build-data.ts";
import { CHAT_TEMPLATE, REASONING_SYSTEM_PROMPT, SPECIAL_TOKENS, loadWorldTokenizer, worldVocabulary, writeWorldTokenizer } from "./tokenizer.ts";

const tokenizer = loadWorldTokenizer();
const unkId = tokenizer.token_to_id(SPECIAL_TOKENS.unk)!;
const problems = [
  ...generateProblems(4_500, { seed: 11, split: "train" }),
  ...generateProblems(500, { seed: 11, split: "test" }),
];

describe("world vocabulary", () => {
  it("is small, unique, and puts the special tokens first", () => {
    const vocabulary = worldVocabulary();
    expect(vocabulary.length).toBeLessThan(256);
    expect(new Set(vocabulary).size).toBe(vocabulary.length);
    expect(vocabulary.slice(0, 7)).toEqual(Object.values(SPECIAL_TOKENS));
    expect(tokenizer.get_vocab().size).toBe(vocabulary.length);
    expect(unkId).toBe(0);
  });
});

describe("encoding world text", () => {
  it("covers 5k problems and solutions with no <unk> and decodes them exactly", () => {
    for (const p of problems) {
      for (const text of [p.question, p.answer, renderWorldSequence(p.question, p.answer)]) {
        const { ids } = tokenizer.encode(text);
        expect(ids.includes(unkId), text).toBe(false);
        expect(tokenizer.decode(ids)).toBe(text);
      }
    }
  });

  it("makes every digit its own token, the same token wherever the number stands", () => {
    const tokens = new Set(problems.flatMap((p) => tokenizer.tokenize(`${p.question}\n${p.answer}`)));
    for (const token of tokens) if (/\d/.test(token)) expect(token).toMatch(/^\d$/);
    expect(tokenizer.tokenize("3 * 14 = 42\n#### 42")).toEqual(["3", " * ", "1", "4", " = ", "4", "2", "\n", "#### ", "4", "2"]);
    expect(tokenizer.tokenize("Tom has 14 apples.")).toEqual(["Tom", " has", " ", "1", "4", " apples", "."]);
  });

  it("encodes special tokens as single ids and can skip them when decoding", () => {
    const text = `${SPECIAL_TOKENS.bos}${SPECIAL_TOKENS.user}\nTom has 2 apples.${SPECIAL_TOKENS.eos}`;
    const { ids, tokens } = tokenizer.encode(text);
    expect(tokens[0]).toBe(SPECIAL_TOKENS.bos);
    expect(tokens[1]).toBe(SPECIAL_TOKENS.user);
    expect(tokens[tokens.length - 1]).toBe(SPECIAL_TOKENS.eos);
    expect(tokenizer.decode(ids)).toBe(text);
    expect(tokenizer.decode(ids, { skip_special_tokens: true })).toBe("\nTom has 2 apples.");
  });

  it("maps what the world never writes to <unk> instead of dropping it", () => {
    const { ids } = tokenizer.encode("Tom has\t$5 pears.");
    expect(ids.filter((id: number) => id === unkId)).toHaveLength(3); // the tab, "$", " pears"
    expect(tokenizer.decode(ids)).toBe("Tom has<unk><unk>5<unk>.");
  });
});

describe("tokenizer files", () => {
  it("load from disk with @huggingface/tokenizers and agree with the built tokenizer", () => {
    const dir = mkdtempSync(join(tmpdir(), "world-tokenizer-"));
    writeWorldTokenizer(dir);
    const json = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
    const config = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
    expect(json.model.type).toBe("WordLevel");
    expect(config).toMatchObject({ bos_token: "<|bos|>", eos_token: "<|eos|>", pad_token: "<|pad|>", unk_token: "<unk>" });
    const loaded = new Tokenizer(json, config);
    for (const p of problems.slice(0, 200)) {
      expect(loaded.encode(p.answer).ids).toEqual(tokenizer.encode(p.answer).ids);
    }
  });
});

describe("chat template", () => {
  const render = (messages: { role: string; content: string }[], addGenerationPrompt: boolean) =>
    new Template(CHAT_TEMPLATE).render({
      messages,
      bos_token: SPECIAL_TOKENS.bos,
      eos_token: SPECIAL_TOKENS.eos,
      add_generation_prompt: addGenerationPrompt,
    });

  it("renders the system prompt and question and ends with the assistant marker", () => {
    const text = render(
      [
        { role: "system", content: REASONING_SYSTEM_PROMPT },
        { role: "user", content: "Tom has 2 apples. How many apples does Tom have now?" },
      ],
      true,
    );
    expect(text).toBe(
      "<|bos|><|system|>\nPlease reason step by step.\n<|user|>\nTom has 2 apples. How many apples does Tom have now?\n<|assistant|>\n",
    );
    expect(tokenizer.encode(text).ids.includes(unkId)).toBe(false);
    expect(tokenizer.tokenize(text).slice(-2)).toEqual([SPECIAL_TOKENS.assistant, "\n"]);
  });

  it("closes an assistant turn with <|eos|> and leaves out the generation prompt when not asked", () => {
    const text = render([{ role: "user", content: "Q" }, { role: "assistant", content: "1 + 1 = 2\n#### 2" }], false);
    expect(text).toBe("<|bos|><|user|>\nQ\n<|assistant|>\n1 + 1 = 2\n#### 2<|eos|>");
  });

  it("refuses roles it has no marker for", () => {
    expect(() => render([{ role: "tool", content: "x" }], true)).toThrow(/unsupported chat role: tool/);
  });
});
