// Translates the contract's request messages into the engine's terms, checking every field
// on the way: a prompt becomes token ids (through the expert's tokenizer and chat template),
// sampling settings become a sampler's options, a distribution request becomes an encoding,
// an adapter selection becomes the registry's choice (whether that version is loaded is the
// registry's answer when the request is admitted).
// Each problem is an InvalidRequestError (or PreconditionError) naming the request field.
import { randomInt } from "node:crypto";
import { ChatRole, DistributionEncoding, FloatDtype } from "#core/gen/lightreasoner/v1/common_pb.ts";
import type { AdapterSelection, ChatPrompt, DistributionRequest, Prompt, SamplingParams } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { GenerationMode } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import type { TextTokenizer } from "#core/formats/tokenizer.ts";
import { ModelFormatError } from "#core/model/errors.ts";
import type { AdapterChoice } from "#inference/engine/adapter-registry.ts";
import { ACTIVE_ADAPTER } from "#inference/engine/adapter-registry.ts";
import { InvalidRequestError, PreconditionError } from "#inference/engine/errors.ts";
import type { SequenceMode } from "#inference/engine/sequence.ts";
import type { ServerLimits } from "./limits.ts";

/** What the request's prompt field names, so nested messages report full paths. */
const PROMPT = "prompt";

export interface EncodedPrompt {
  ids: number[];
  /** The text the ids came from (after the chat template), or the decoded ids. */
  text: string;
}

export interface PromptContext {
  tokenizer: TextTokenizer;
  /** Ids must be below this (the logits width both models share). */
  vocabSize: number;
  /** Most tokens the encoded prompt may have. */
  maxTokens: number;
}

const ROLE_NAMES: Partial<Record<ChatRole, string>> = {
  [ChatRole.SYSTEM]: "system",
  [ChatRole.USER]: "user",
  [ChatRole.ASSISTANT]: "assistant",
};

export function encodePrompt(prompt: Prompt | undefined, { tokenizer, vocabSize, maxTokens }: PromptContext): EncodedPrompt {
  const source = prompt?.source;
  let encoded: EncodedPrompt;
  switch (source?.case) {
    case "text": {
      if (source.value.length === 0) throw new InvalidRequestError(`${PROMPT}.text`, "must not be empty");
      encoded = { ids: tokenizer.encode(source.value, { addSpecialTokens: true }), text: source.value };
      break;
    }
    case "chat":
      encoded = encodeChat(source.value, tokenizer);
      break;
    case "tokenIds": {
      const ids = source.value.ids;
      const field = `${PROMPT}.token_ids.ids`;
      if (ids.length === 0) throw new InvalidRequestError(field, "must hold at least one token id");
      ids.forEach((id, i) => {
        if (id >= vocabSize) throw new InvalidRequestError(`${field}[${i}]`, `token id ${id} is outside the vocabulary [0, ${vocabSize})`);
      });
      encoded = { ids: [...ids], text: tokenizer.decode(ids) };
      break;
    }
    default:
      throw new InvalidRequestError(PROMPT, "exactly one of text, chat or token_ids must be set");
  }
  if (encoded.ids.length === 0) throw new InvalidRequestError(PROMPT, "encodes to no tokens");
  if (encoded.ids.length > maxTokens) throw new InvalidRequestError(PROMPT, `encodes to ${encoded.ids.length} tokens, above the limit of ${maxTokens}`);
  return encoded;
}

function encodeChat({ systemPrompt, messages }: ChatPrompt, tokenizer: TextTokenizer): EncodedPrompt {
  const field = `${PROMPT}.chat`;
  if (messages.length === 0) throw new InvalidRequestError(`${field}.messages`, "must hold at least one message");
  const turns = messages.map((m, i) => {
    const role = ROLE_NAMES[m.role];
    if (!role) throw new InvalidRequestError(`${field}.messages[${i}].role`, `must be SYSTEM, USER or ASSISTANT, got ${m.role}`);
    return { role, content: m.content };
  });
  if (systemPrompt !== "") {
    if (turns[0].role === "system") throw new InvalidRequestError(`${field}.system_prompt`, "must be empty when messages already start with a system turn");
    turns.unshift({ role: "system", content: systemPrompt });
  }
  if (!tokenizer.chatTemplate) throw new PreconditionError(`${field}: the expert has no chat template; send the prompt as text or token_ids`, field);
  let text: string;
  try {
    text = tokenizer.renderChat(turns, { addGenerationPrompt: true });
  } catch (err) {
    if (err instanceof ModelFormatError) throw new PreconditionError(`${field}: ${err.message}`, field);
    throw err;
  }
  // The template writes the special tokens (BOS included) itself.
  return { ids: tokenizer.encode(text, { addSpecialTokens: false }), text };
}

export interface Sampling {
  temperature: number;
  topP: number;
  seed: number;
  maxNewTokens: number;
  stopStrings: string[];
}

export function samplingOf(params: SamplingParams | undefined, limits: ServerLimits, field = "sampling"): Sampling {
  const temperature = params?.temperature ?? 0;
  if (!(Number.isFinite(temperature) && temperature >= 0)) throw new InvalidRequestError(`${field}.temperature`, `must be a finite number >= 0, got ${temperature}`);
  const topP = params?.topP ?? 1;
  if (!(topP > 0 && topP <= 1)) throw new InvalidRequestError(`${field}.top_p`, `must be in (0, 1], got ${topP}`);
  const requested = params?.maxNewTokens ?? 0;
  if (requested > limits.maxNewTokens) throw new InvalidRequestError(`${field}.max_new_tokens`, `${requested} is above the limit of ${limits.maxNewTokens}`);
  const stopStrings = params?.stopStrings ?? [];
  if (stopStrings.length > limits.maxStopStrings) {
    throw new InvalidRequestError(`${field}.stop_strings`, `has ${stopStrings.length} entries, above the limit of ${limits.maxStopStrings}`);
  }
  stopStrings.forEach((s, i) => {
    if (s.length === 0) throw new InvalidRequestError(`${field}.stop_strings[${i}]`, "must not be empty");
  });
  return {
    temperature,
    topP,
    // The contract lets the client leave the seed to the server, which reports it back.
    seed: params?.seed ?? randomInt(0, 0x100000000),
    maxNewTokens: requested === 0 ? limits.defaultMaxNewTokens : requested,
    stopStrings: [...stopStrings],
  };
}

export type DistributionSpec = { encoding: "none" } | { encoding: "full"; dtype: "float32" | "float16" } | { encoding: "sparse"; alpha: number; topK: number };

export function distributionSpecOf(request: DistributionRequest | undefined, limits: ServerLimits, options: { allowNone: boolean }, field = "distributions"): DistributionSpec {
  const encoding = request?.encoding ?? DistributionEncoding.UNSPECIFIED;
  switch (encoding) {
    case DistributionEncoding.NONE:
      if (!options.allowNone) throw new InvalidRequestError(`${field}.encoding`, "NONE is not allowed here; ask for FULL or SPARSE");
      return { encoding: "none" };
    case DistributionEncoding.FULL: {
      const dtype = request!.dtype;
      if (dtype === FloatDtype.UNSPECIFIED || dtype === FloatDtype.FLOAT32) return { encoding: "full", dtype: "float32" };
      if (dtype === FloatDtype.FLOAT16) return { encoding: "full", dtype: "float16" };
      throw new InvalidRequestError(`${field}.dtype`, `unknown float dtype ${dtype}`);
    }
    case DistributionEncoding.SPARSE: {
      const { alpha, topK } = request!;
      if (!(alpha > 0 && alpha <= 1)) throw new InvalidRequestError(`${field}.alpha`, `must be in (0, 1] (the method uses 0.2), got ${alpha}`);
      if (topK > limits.maxTopK) throw new InvalidRequestError(`${field}.top_k`, `${topK} is above the limit of ${limits.maxTopK}`);
      return { encoding: "sparse", alpha, topK };
    }
    case DistributionEncoding.UNSPECIFIED:
      throw new InvalidRequestError(`${field}.encoding`, "must be set to NONE, FULL or SPARSE");
    default:
      throw new InvalidRequestError(`${field}.encoding`, `unknown encoding ${encoding}`);
  }
}

const DEFAULT_CONTRASTIVE_ALPHA = 0.2;

export function generationModeOf(mode: GenerationMode, alphaValue: number | undefined): { mode: SequenceMode; alpha: number } {
  const alpha = alphaValue ?? DEFAULT_CONTRASTIVE_ALPHA;
  switch (mode) {
    case GenerationMode.EXPERT:
      return { mode: "expert", alpha };
    case GenerationMode.AMATEUR:
      return { mode: "amateur", alpha };
    case GenerationMode.CONTRASTIVE:
      if (!(alpha > 0 && alpha <= 1)) throw new InvalidRequestError("alpha", `must be in (0, 1], got ${alpha}`);
      return { mode: "contrastive", alpha };
    case GenerationMode.UNSPECIFIED:
      throw new InvalidRequestError("mode", "must be EXPERT, AMATEUR or CONTRASTIVE");
    default:
      throw new InvalidRequestError("mode", `unknown generation mode ${mode}`);
  }
}

/** The expert's weights a request names; unset: the active adapter. */
export function adapterChoiceOf(selection: AdapterSelection | undefined, field = "adapter"): AdapterChoice {
  const choice = selection?.choice;
  switch (choice?.case) {
    case undefined:
      return ACTIVE_ADAPTER;
    case "base":
      return { kind: "base" };
    case "version":
      if (choice.value === "") throw new InvalidRequestError(`${field}.version`, "must name a loaded adapter version (set base for the expert without an adapter, or leave adapter unset for the active one)");
      return { kind: "version", version: choice.value };
    default:
      throw new InvalidRequestError(field, "unknown adapter choice");
  }
}
