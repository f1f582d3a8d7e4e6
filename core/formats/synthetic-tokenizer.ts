// The tokenizer init-model ships with a random model: byte-level BPE in the GPT-2/Qwen2
// layout, sized to exactly the model's vocabulary. Special tokens sit where config.json
// says (bos/eos/pad ids) or at the lowest free ids; then the 256 byte tokens, so any text
// encodes; then merged tokens up to vocab_size, so every id decodes to some text. Merges
// are built from characters in rough English frequency order, so ordinary text encodes to
// fewer tokens than bytes, as with a trained tokenizer.
import { BYTE_TO_CHAR } from "./byte-level.ts";
import { ModelFormatError } from "#core/model/errors.ts";

export const ENDOFTEXT = "<|endoftext|>";
export const STARTOFTEXT = "<|startoftext|>";
export const PAD = "<|pad|>";
export const IM_START = "<|im_start|>";
export const IM_END = "<|im_end|>";

export interface SyntheticTokenizerOptions {
  vocabSize: number;
  /** Llama-family tokenizers prepend BOS when encoding; Qwen2's do not. */
  addBos: boolean;
  bosTokenId?: number;
  /** The first id ends text; a second one, if given, is where <|im_end|> goes. */
  eosTokenIds?: number[];
  padTokenId?: number;
  modelMaxLength?: number;
  /** Names the config in errors. */
  source: string;
}

export interface SyntheticTokenizer {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  generationConfig: Record<string, unknown>;
  ids: { bos: number; eos: number; pad: number; imStart: number; imEnd: number };
}

/** Characters merges are built from, most frequent in English text first. */
const MERGE_ALPHABET = [
  ..." etaoinshrdlcumwfgypbvkjxqz",
  ..."ETAOINSHRDLCUMWFGYPBVKJXQZ",
  ..."0123456789",
  ...".,'\"-?!:;()[]{}<>/\\|@#$%^&*_+=~`",
  "\n",
  "\t",
].map((c) => BYTE_TO_CHAR[c.charCodeAt(0)]);

/**
 * Yields [left, right] merges: every pair of alphabet characters, then three-character tokens,
 * and so on. Within a length, pairs come in diagonal order (left index + right index), so
 * frequent characters combine first.
 */
function* mergeCandidates(): Generator<[string, string]> {
  let level: string[] = MERGE_ALPHABET;
  for (;;) {
    const next: string[] = [];
    const width = MERGE_ALPHABET.length;
    for (let s = 0; s < level.length + width - 1; s++) {
      for (let j = Math.max(0, s - level.length + 1); j <= Math.min(s, width - 1); j++) {
        const left = level[s - j];
        next.push(left + MERGE_ALPHABET[j]);
        yield [left, MERGE_ALPHABET[j]];
      }
    }
    level = next;
  }
}

function checkId(id: number | undefined, field: string, vocabSize: number, source: string): number | undefined {
  if (id === undefined) return undefined;
  if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
    throw new ModelFormatError(source, `"${field}" ${id} is outside the vocabulary [0, ${vocabSize})`);
  }
  return id;
}

/** Assigns each special token an id: the config's where given, else the lowest free one. */
function placeSpecials(o: SyntheticTokenizerOptions): { vocab: (string | undefined)[]; ids: SyntheticTokenizer["ids"]; specials: string[] } {
  const vocab: (string | undefined)[] = new Array(o.vocabSize);
  if ((o.eosTokenIds?.length ?? 0) > 2) throw new ModelFormatError(o.source, `init-model places at most two eos_token_id values, got ${o.eosTokenIds!.length}`);
  const wanted: [string, number | undefined][] = [
    [ENDOFTEXT, checkId(o.eosTokenIds?.[0], "eos_token_id", o.vocabSize, o.source)],
    [IM_END, checkId(o.eosTokenIds?.[1], "eos_token_id", o.vocabSize, o.source)],
    [STARTOFTEXT, checkId(o.bosTokenId, "bos_token_id", o.vocabSize, o.source)],
    [PAD, checkId(o.padTokenId, "pad_token_id", o.vocabSize, o.source)],
    [IM_START, undefined],
  ];
  const idOf = new Map<string, number>();
  // A config may give one id two roles (Qwen2.5 base: bos = eos); the token placed first keeps it.
  for (const [content, id] of wanted) {
    if (id === undefined) continue;
    if (vocab[id] === undefined) {
      vocab[id] = content;
      idOf.set(content, id);
    } else {
      idOf.set(content, id);
    }
  }
  let free = 0;
  for (const [content] of wanted) {
    if (idOf.has(content)) continue;
    while (vocab[free] !== undefined) free++;
    vocab[free] = content;
    idOf.set(content, free);
  }
  const ids = { eos: idOf.get(ENDOFTEXT)!, imEnd: idOf.get(IM_END)!, bos: idOf.get(STARTOFTEXT)!, pad: idOf.get(PAD)!, imStart: idOf.get(IM_START)! };
  return { vocab, ids, specials: [...new Set(vocab.filter((v): v is string => v !== undefined))] };
}

function chatTemplate(addBos: boolean): string {
  return (
    (addBos ? "{{ bos_token }}" : "") +
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
  );
}

export function buildSyntheticTokenizer(o: SyntheticTokenizerOptions): SyntheticTokenizer {
  const { vocab, ids, specials } = placeSpecials(o);
  const mergeCount = o.vocabSize - specials.length - 256;
  if (mergeCount < 0) {
    throw new ModelFormatError(o.source, `vocab_size ${o.vocabSize} is too small: init-model's byte-level tokenizer needs ${256 + specials.length} (256 bytes + ${specials.length} special tokens)`);
  }
  let free = 0;
  const place = (token: string) => {
    while (vocab[free] !== undefined) free++;
    vocab[free] = token;
  };
  for (const ch of BYTE_TO_CHAR) place(ch);
  const merges: string[] = [];
  const candidates = mergeCandidates();
  for (let n = 0; n < mergeCount; n++) {
    const [left, right] = candidates.next().value as [string, string];
    place(left + right);
    merges.push(`${left} ${right}`);
  }
  const modelVocab: Record<string, number> = {};
  vocab.forEach((token, id) => (modelVocab[token!] = id));
  const specialIds = specials.map((content) => modelVocab[content]);
  const addedTokens = specials.map((content, i) => ({
    id: specialIds[i], content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  }));
  const bos = vocab[ids.bos]!;
  const postProcessor = o.addBos
    ? {
        type: "TemplateProcessing",
        single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
        pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
        special_tokens: { [bos]: { id: bos, ids: [ids.bos], tokens: [bos] } },
      }
    : { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: true };
  const tokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: postProcessor,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab: modelVocab, merges,
    },
  };
  const tokenizerConfig = {
    add_bos_token: o.addBos,
    add_eos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: Object.fromEntries(addedTokens.map(({ id, ...rest }) => [String(id), rest])),
    bos_token: bos,
    eos_token: vocab[ids.eos],
    pad_token: vocab[ids.pad],
    unk_token: null,
    chat_template: chatTemplate(o.addBos),
    clean_up_tokenization_spaces: false,
    errors: "replace",
    model_max_length: o.modelMaxLength ?? 2048,
    tokenizer_class: "PreTrainedTokenizerFast",
  };
  const generationConfig = { bos_token_id: ids.bos, eos_token_id: [...new Set([ids.eos, ids.imEnd])], pad_token_id: ids.pad };
  return { tokenizerJson, tokenizerConfig, generationConfig, ids };
}
