// A model's tokenizer (tokenizer.json + tokenizer_config.json, run by @huggingface/tokenizers)
// with what the services need around it: special-token ids, the ids that end generation, the
// bytes of a single token (so streamed text never splits a UTF-8 character), the chat
// template, and a comparison that explains why two models cannot be run in lockstep.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { ModelFormatError } from "#core/model/errors.ts";
import { byteLevelToBytes } from "./byte-level.ts";
import { renderChat, type ChatMessage } from "./chat-template.ts";

export const TOKENIZER_FILE = "tokenizer.json";
export const TOKENIZER_CONFIG_FILE = "tokenizer_config.json";
export const CHAT_TEMPLATE_FILE = "chat_template.jinja";

export interface SpecialTokenIds {
  bos: number | null;
  eos: number | null;
  pad: number | null;
  unk: number | null;
}

type Json = Record<string, unknown>;

/** How the decoder spells bytes in token strings, read once from tokenizer.json. */
interface PieceSpelling {
  byteLevel: boolean;
  byteFallback: boolean;
  /** Literal replacements applied to a piece (e.g. the SentencePiece "▁" -> " "). */
  replacements: [string, string][];
}

/** Conventional spellings, used only when tokenizer_config.json does not name a role at all. */
const FALLBACK_CONTENTS: Record<keyof SpecialTokenIds, string[]> = {
  bos: ["<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>"],
  eos: ["</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"],
  pad: ["<pad>", "<|pad|>"],
  unk: ["<unk>"],
};

const utf8 = new TextEncoder();
const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

function readJson(path: string, what: string): Json {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new ModelFormatError(path, `cannot read ${what}: ${(err as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new ModelFormatError(path, `${what} must be a JSON object`);
  return json as Json;
}

/** tokenizer_config.json spells a special token as a string or as {content: ...}. */
function tokenContent(value: unknown): string | null {
  if (typeof value === "string") return value;
  if (typeof value === "object" && value !== null && typeof (value as Json).content === "string") return (value as Json).content as string;
  return null;
}

function idList(value: unknown): number[] {
  if (typeof value === "number" && Number.isInteger(value)) return [value];
  if (Array.isArray(value)) return value.filter((v): v is number => typeof v === "number" && Number.isInteger(v));
  return [];
}

function pieceSpelling(decoder: unknown): PieceSpelling {
  const spelling: PieceSpelling = { byteLevel: false, byteFallback: false, replacements: [] };
  const visit = (d: unknown) => {
    if (typeof d !== "object" || d === null) return;
    const cfg = d as Json;
    switch (cfg.type) {
      case "Sequence":
        for (const inner of (cfg.decoders as unknown[]) ?? []) visit(inner);
        break;
      case "ByteLevel":
        spelling.byteLevel = true;
        break;
      case "ByteFallback":
        spelling.byteFallback = true;
        break;
      case "Metaspace":
        spelling.replacements.push([typeof cfg.replacement === "string" ? cfg.replacement : "\u2581", " "]);
        break;
      case "Replace": {
        const pattern = (cfg.pattern as Json | undefined)?.String;
        if (typeof pattern === "string" && typeof cfg.content === "string") spelling.replacements.push([pattern, cfg.content]);
        break;
      }
    }
  };
  visit(decoder);
  return spelling;
}

/** The chat template from tokenizer_config.json (string, or the older list of named templates) or chat_template.jinja. */
function findChatTemplate(config: Json, dir: string | null): string | null {
  const value = config.chat_template;
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    const named = value.find((t) => (t as Json)?.name === "default") ?? value[0];
    const template = (named as Json | undefined)?.template;
    if (typeof template === "string") return template;
  }
  if (dir && existsSync(join(dir, CHAT_TEMPLATE_FILE))) return readFileSync(join(dir, CHAT_TEMPLATE_FILE), "utf8");
  return null;
}

/** Incremental text for a stream of ids: bytes of a split UTF-8 character wait for the rest. */
export interface TokenStreamDecoder {
  push(id: number): string;
  end(): string;
}

export interface TokenizerSources {
  /** Names the origin in errors; also where chat_template.jinja is looked for. */
  dir?: string;
  /** Further ids that end generation (config.json / generation_config.json eos_token_id). */
  extraEosTokenIds?: number[];
}

export class TextTokenizer {
  readonly vocabSize: number;
  readonly specialTokens: SpecialTokenIds;
  /** Every id that ends generation: the tokenizer's eos plus any the model's configs add. */
  readonly eosTokenIds: number[];
  readonly chatTemplate: string | null;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  /** Whether encode(..., {addSpecialTokens: true}) inserts tokens (e.g. Llama's BOS). */
  readonly addsSpecialTokens: boolean;
  /**
   * Whether decode() strips spaces before punctuation (" ." -> "."), as tokenizer_config.json's
   * clean_up_tokenization_spaces asks. Like transformers 5, only for non-BPE models: the rule was
   * written for WordPiece and corrupts BPE text (Llama 3's config sets it, and would decode
   * "takes .5 hours" as "takes.5 hours"). @huggingface/tokenizers applies it whenever the key is
   * true or absent, so decode() always passes this value.
   */
  readonly cleansUpSpaces: boolean;
  private readonly vocab: (string | undefined)[];
  private readonly addedTokens: Map<number, { content: string; special: boolean }>;
  private readonly spelling: PieceSpelling;

  private constructor(
    private readonly inner: Tokenizer,
    readonly source: string,
    tokenizerJson: Json,
    config: Json,
    sources: TokenizerSources,
  ) {
    this.vocab = inner.model!.vocab;
    this.vocabSize = this.vocab.length;
    this.addedTokens = new Map([...inner.get_added_tokens_decoder()].map(([id, t]) => [id, { content: t.content, special: t.special }]));
    this.spelling = pieceSpelling(tokenizerJson.decoder);
    const modelUnk = (tokenizerJson.model as Json | undefined)?.unk_token;
    const contentOf = (role: keyof SpecialTokenIds): string | null => {
      const key = `${role}_token`;
      if (key in config) return tokenContent(config[key]); // an explicit null (Qwen2's bos) means none
      if (role === "unk" && typeof modelUnk === "string") return modelUnk;
      return FALLBACK_CONTENTS[role].find((c) => [...this.addedTokens.values()].some((t) => t.content === c)) ?? null;
    };
    const idOf = (content: string | null) => (content === null ? null : (inner.token_to_id(content) ?? null));
    const contents = { bos: contentOf("bos"), eos: contentOf("eos"), pad: contentOf("pad"), unk: contentOf("unk") };
    this.specialTokens = { bos: idOf(contents.bos), eos: idOf(contents.eos), pad: idOf(contents.pad), unk: idOf(contents.unk) };
    this.bosToken = contents.bos;
    this.eosToken = contents.eos;
    const eos = [this.specialTokens.eos, ...(sources.extraEosTokenIds ?? [])].filter((id): id is number => id !== null);
    this.eosTokenIds = [...new Set(eos)];
    this.chatTemplate = findChatTemplate(config, sources.dir ?? null);
    const model = (tokenizerJson.model ?? {}) as Json;
    const isBpe = model.type === "BPE" || (model.type === undefined && "merges" in model); // an untyped model with merges loads as BPE
    this.cleansUpSpaces = config.clean_up_tokenization_spaces === true && !isBpe;
    this.addsSpecialTokens = inner.encode("a", { add_special_tokens: true }).ids.length !== inner.encode("a", { add_special_tokens: false }).ids.length;
  }

  /** Builds a tokenizer from parsed tokenizer.json and tokenizer_config.json objects. */
  static fromObjects(tokenizerJson: unknown, tokenizerConfig: unknown, source: string, sources: TokenizerSources = {}): TextTokenizer {
    if (typeof tokenizerJson !== "object" || tokenizerJson === null || Array.isArray(tokenizerJson)) {
      throw new ModelFormatError(source, "tokenizer.json must be a JSON object");
    }
    const json = { normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, added_tokens: [], ...(tokenizerJson as Json) };
    const config = (typeof tokenizerConfig === "object" && tokenizerConfig !== null ? tokenizerConfig : {}) as Json;
    let inner: Tokenizer;
    try {
      inner = new Tokenizer(json, config);
    } catch (err) {
      throw new ModelFormatError(source, `unsupported or malformed tokenizer: ${(err as Error).message}`);
    }
    if (!inner.model || inner.model.vocab.length === 0) throw new ModelFormatError(source, "tokenizer has an empty vocabulary");
    return new TextTokenizer(inner, source, json, config, sources);
  }

  /** Loads `<dir>/tokenizer.json` and `tokenizer_config.json`; eos ids from config.json and generation_config.json join in. */
  static load(dir: string): TextTokenizer {
    const path = join(dir, TOKENIZER_FILE);
    if (!existsSync(path)) throw new ModelFormatError(path, "missing: the model directory needs a tokenizer.json");
    const json = readJson(path, "tokenizer.json");
    const configPath = join(dir, TOKENIZER_CONFIG_FILE);
    const config = existsSync(configPath) ? readJson(configPath, "tokenizer_config.json") : {};
    const extraEosTokenIds: number[] = [];
    for (const name of ["generation_config.json", "config.json"]) {
      const p = join(dir, name);
      if (existsSync(p)) extraEosTokenIds.push(...idList(readJson(p, name).eos_token_id));
    }
    return TextTokenizer.fromObjects(json, config, path, { dir, extraEosTokenIds });
  }

  get bosTokenId(): number | null {
    return this.specialTokens.bos;
  }
  get eosTokenId(): number | null {
    return this.specialTokens.eos;
  }
  get padTokenId(): number | null {
    return this.specialTokens.pad;
  }
  get unkTokenId(): number | null {
    return this.specialTokens.unk;
  }

  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    return this.inner.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  /** Text of a sequence as transformers decodes it; ids outside the vocabulary are dropped. */
  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    const known = ids.filter((id) => this.hasId(id));
    if (known.length === 0) return "";
    return this.inner.decode(known, { skip_special_tokens: options.skipSpecialTokens ?? false, clean_up_tokenization_spaces: this.cleansUpSpaces });
  }

  hasId(id: number): boolean {
    return Number.isInteger(id) && id >= 0 && id < this.vocabSize && this.vocab[id] !== undefined;
  }

  /** The raw vocabulary string of a token (e.g. "▁Hello", "ĠHello", "<0x0A>"), or undefined. */
  tokenString(id: number): string | undefined {
    return this.hasId(id) ? this.vocab[id] : undefined;
  }

  isSpecial(id: number): boolean {
    return this.addedTokens.get(id)?.special ?? false;
  }

  /** The UTF-8 bytes one token contributes to the text (empty for ids outside the vocabulary). */
  tokenBytes(id: number): Uint8Array {
    const piece = this.tokenString(id);
    if (piece === undefined) return new Uint8Array(0);
    const added = this.addedTokens.get(id);
    if (added) return utf8.encode(added.content);
    if (this.spelling.byteLevel) return byteLevelToBytes(piece);
    const byte = this.spelling.byteFallback ? BYTE_PIECE.exec(piece) : null;
    if (byte) return Uint8Array.of(parseInt(byte[1], 16));
    let text = piece;
    for (const [from, to] of this.spelling.replacements) text = text.split(from).join(to);
    return utf8.encode(text);
  }

  /**
   * The text of one token on its own, keeping its leading space ("▁the" -> " the"). A token that
   * is only part of a UTF-8 character (a byte-fallback piece such as <0xE2>) shows as U+FFFD;
   * use streamDecoder() to join such pieces.
   */
  decodeToken(id: number): string {
    return new TextDecoder("utf-8").decode(this.tokenBytes(id));
  }

  /** Decodes ids one at a time, holding back incomplete UTF-8 characters until they complete. */
  streamDecoder(options: { skipSpecialTokens?: boolean } = {}): TokenStreamDecoder {
    const decoder = new TextDecoder("utf-8");
    return {
      push: (id) => (options.skipSpecialTokens && this.isSpecial(id) ? "" : decoder.decode(this.tokenBytes(id), { stream: true })),
      end: () => decoder.decode(),
    };
  }

  /** Renders a conversation with this model's chat template (ModelFormatError when it has none). */
  renderChat(messages: readonly ChatMessage[], options: { addGenerationPrompt?: boolean } = {}): string {
    return renderChat(this.chatTemplate, messages, {
      addGenerationPrompt: options.addGenerationPrompt,
      bosToken: this.bosToken,
      eosToken: this.eosToken,
      source: this.source.replace(/tokenizer\.json$/, TOKENIZER_CONFIG_FILE),
    });
  }
}

/**
 * Human-readable differences between two tokenizers, empty when they agree on every id and
 * on the special tokens (what running an expert and an amateur in lockstep requires).
 */
export function compareTokenizers(a: TextTokenizer, b: TextTokenizer, maxListed = 5): string[] {
  const out: string[] = [];
  if (a.vocabSize !== b.vocabSize) out.push(`vocabulary size: ${a.vocabSize} vs ${b.vocabSize}`);
  const differing: number[] = [];
  const shared = Math.min(a.vocabSize, b.vocabSize);
  for (let id = 0; id < shared; id++) if (a.tokenString(id) !== b.tokenString(id)) differing.push(id);
  for (const id of differing.slice(0, maxListed)) {
    out.push(`token ${id}: ${JSON.stringify(a.tokenString(id) ?? null)} vs ${JSON.stringify(b.tokenString(id) ?? null)}`);
  }
  if (differing.length > maxListed) out.push(`... ${differing.length - maxListed} more ids differ (${differing.length} of ${shared})`);
  const describe = (t: TextTokenizer, id: number | null) => (id === null ? "none" : `${id} (${JSON.stringify(t.tokenString(id) ?? null)})`);
  for (const role of ["bos", "eos", "pad", "unk"] as const) {
    const [x, y] = [a.specialTokens[role], b.specialTokens[role]];
    if (x !== y) out.push(`${role} token: ${describe(a, x)} vs ${describe(b, y)}`);
  }
  const eosA = [...a.eosTokenIds].sort((p, q) => p - q).join(",");
  const eosB = [...b.eosTokenIds].sort((p, q) => p - q).join(",");
  if (eosA !== eosB) out.push(`end-of-generation ids: [${eosA}] vs [${eosB}]`);
  return out;
}
