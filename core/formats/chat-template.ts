// Chat templates: the Jinja program in a model's tokenizer_config.json (or chat_template.jinja)
// that turns a conversation into the exact prompt text the model was trained on. Rendered with
// @huggingface/jinja, the implementation transformers.js uses for the same templates.
import { Template } from "@huggingface/jinja";
import { ModelFormatError } from "#core/model/errors.ts";

export interface ChatMessage {
  role: string;
  content: string;
}

export interface RenderChatOptions {
  /** Append the opening of an assistant turn, so the model's continuation is the reply. */
  addGenerationPrompt?: boolean;
  bosToken?: string | null;
  eosToken?: string | null;
  /** Names the template's origin in errors (e.g. the tokenizer_config.json path). */
  source?: string;
}

/** The template ran but refused the conversation (e.g. its raise_exception for non-alternating roles). */
export class ChatTemplateError extends Error {
  constructor(
    readonly file: string,
    readonly problem: string,
  ) {
    super(`${file}: ${problem}`);
    this.name = "ChatTemplateError";
  }
}

const parsed = new Map<string, Template>();

function compile(template: string, source: string): Template {
  let t = parsed.get(template);
  if (!t) {
    try {
      t = new Template(template);
    } catch (err) {
      throw new ModelFormatError(source, `chat template does not parse: ${(err as Error).message}`);
    }
    // A process serves one or two models, so a handful of templates is all this ever holds.
    if (parsed.size >= 16) parsed.clear();
    parsed.set(template, t);
  }
  return t;
}

/** Renders `messages` with a model's chat template. */
export function renderChat(template: string | null | undefined, messages: readonly ChatMessage[], options: RenderChatOptions = {}): string {
  const source = options.source ?? "tokenizer_config.json";
  if (typeof template !== "string" || template.length === 0) {
    throw new ModelFormatError(
      source,
      `the model has no chat template ("chat_template" in tokenizer_config.json or a chat_template.jinja file); ` +
        `send plain prompts instead of chat messages`,
    );
  }
  for (const [i, m] of messages.entries()) {
    if (typeof m?.role !== "string" || typeof m?.content !== "string") {
      throw new ChatTemplateError(source, `message ${i} needs string "role" and "content"`);
    }
  }
  const program = compile(template, source);
  try {
    return program.render({
      messages: messages.map((m) => ({ role: m.role, content: m.content })),
      add_generation_prompt: options.addGenerationPrompt ?? false,
      bos_token: options.bosToken ?? "",
      eos_token: options.eosToken ?? "",
    });
  } catch (err) {
    throw new ChatTemplateError(source, `chat template failed: ${(err as Error).message}`);
  }
}
