// The built-in world's tokenizer as Hugging Face files (`tokenizer.json` and
// `tokenizer_config.json` with a Jinja chat template), so the expert and amateur load it
// through the same path as any real model. Word-level: one token per word, one per digit
// (so arithmetic is learnable digit by digit), one per punctuation mark and operator.
//
// A word carries the space before it (" apples"), as GPT-2-style tokenizers do; operators
// carry the spaces on both sides (" * ", " = ") and the marker its following space
// ("#### "); a digit never carries a space (a space before a number is its own " " token),
// so the same digit is the same token in the question and in every position of the
// solution, and copying a number is copying tokens. The `Fuse` decoder gives back the exact
// text: decode(encode(x)) === x for everything the world writes (no whitespace
// normalisation). Text outside the world's pieces (a tab, "$", a capital word the world
// never writes) becomes `<unk>`, and decode writes `<unk>` there.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { lexiconWords, questionOpeningWords } from "./lexicon.ts";

/** The system prompt of the method (METHOD.md, stage 1); its words are in the vocabulary. */
export const REASONING_SYSTEM_PROMPT = "Please reason step by step.";

export const SPECIAL_TOKENS = {
  unk: "<unk>",
  bos: "<|bos|>",
  eos: "<|eos|>",
  pad: "<|pad|>",
  system: "<|system|>",
  user: "<|user|>",
  assistant: "<|assistant|>",
} as const;

/**
 * One piece per match, tried in order: newline, the answer marker with its space, an
 * operator with its two spaces, a word with an optional leading space, ONE digit, a lone
 * space, one other visible character. Text between matches (other whitespace) becomes its
 * own piece and so `<unk>`.
 */
export const PIECE_PATTERN = "\\n|#### | [-+*/=] | ?[A-Za-z]+|[0-9]| |[^\\sA-Za-z0-9]";

const DIGITS = [..."0123456789"];
const MARKS = [".", "?", ","];
const OPERATORS = ["+", "-", "*", "/", "="];

/**
 * The vocabulary in id order: special tokens, newline, `#### `, the lone space, digits,
 * punctuation, operators (spaced: `3 * 4 = 12`), the words that can open a text (no leading
 * space), then every word with its leading space.
 */
export function worldVocabulary(): string[] {
  const systemWords = REASONING_SYSTEM_PROMPT.match(/[A-Za-z]+/g)!;
  const words = [...new Set([...lexiconWords(), ...systemWords])];
  const openers = [...new Set([...questionOpeningWords(), systemWords[0]])];
  return [
    ...Object.values(SPECIAL_TOKENS),
    "\n",
    "#### ",
    " ",
    ...DIGITS,
    ...MARKS,
    ...OPERATORS.map((op) => ` ${op} `),
    ...openers,
    ...words.map((w) => ` ${w}`),
  ];
}

/**
 * The chat template: `<|bos|>`, then each message as `<|role|>\n` + content, closed by a
 * newline (system, user) or by `<|eos|>` (assistant, so a trained model learns to stop);
 * with add_generation_prompt it ends with `<|assistant|>\n`. Other roles raise.
 */
export const CHAT_TEMPLATE =
  "{{ bos_token }}" +
  "{% for message in messages %}" +
  "{% if message['role'] == 'assistant' %}" +
  "{{ '<|assistant|>\\n' + message['content'] + eos_token }}" +
  "{% elif message['role'] == 'system' or message['role'] == 'user' %}" +
  "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}" +
  "{% else %}" +
  "{{ raise_exception('unsupported chat role: ' + message['role']) }}" +
  "{% endif %}" +
  "{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

export interface WorldTokenizerFiles {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
}

/** Both files as objects, in the layout the Hugging Face `tokenizers` library (Rust and JS) reads. */
export function buildWorldTokenizer(): WorldTokenizerFiles {
  const vocabulary = worldVocabulary();
  const specials = Object.values(SPECIAL_TOKENS) as string[];
  const addedTokens = specials.map((content, id) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const tokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: { type: "Split", pattern: { Regex: PIECE_PATTERN }, behavior: "Isolated", invert: false },
    post_processor: null,
    decoder: { type: "Fuse" },
    model: {
      type: "WordLevel",
      vocab: Object.fromEntries(vocabulary.map((token, id) => [token, id])),
      unk_token: SPECIAL_TOKENS.unk,
    },
  };
  const tokenizerConfig = {
    tokenizer_class: "PreTrainedTokenizerFast",
    bos_token: SPECIAL_TOKENS.bos,
    eos_token: SPECIAL_TOKENS.eos,
    pad_token: SPECIAL_TOKENS.pad,
    // The JS library's word-level model takes its unknown token from here, not from tokenizer.json.
    unk_token: SPECIAL_TOKENS.unk,
    additional_special_tokens: [SPECIAL_TOKENS.system, SPECIAL_TOKENS.user, SPECIAL_TOKENS.assistant],
    added_tokens_decoder: Object.fromEntries(addedTokens.map(({ id, ...token }) => [String(id), token])),
    // Decoding is exact (Fuse); the default clean-up would rewrite " ." and the like.
    clean_up_tokenization_spaces: false,
    add_bos_token: false,
    add_eos_token: false,
    model_max_length: 512,
    chat_template: CHAT_TEMPLATE,
  };
  return { tokenizerJson, tokenizerConfig };
}

/** Writes `tokenizer.json` and `tokenizer_config.json` into `dir` (created if missing). */
export function writeWorldTokenizer(dir: string): WorldTokenizerFiles {
  const files = buildWorldTokenizer();
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "tokenizer.json"), `${JSON.stringify(files.tokenizerJson, null, 2)}\n`);
  writeFileSync(join(dir, "tokenizer_config.json"), `${JSON.stringify(files.tokenizerConfig, null, 2)}\n`);
  return files;
}

/** The world tokenizer loaded with `@huggingface/tokenizers`, as a model directory would load it. */
export function loadWorldTokenizer(): Tokenizer {
  const { tokenizerJson, tokenizerConfig } = buildWorldTokenizer();
  return new Tokenizer(tokenizerJson, tokenizerConfig);
}
