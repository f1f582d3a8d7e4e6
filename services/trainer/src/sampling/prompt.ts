// How a problem becomes the prompt both models see: the method's chat prompt (a system turn
// "Please reason step by step." and the question as the user turn). The trainer sends it as
// a ChatPrompt and the inference server applies the expert's chat template; importing the
// reference's text samples renders it here the same way (template, then encode without
// added special tokens, since the template writes them).
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ChatRole } from "#core/gen/lightreasoner/v1/common_pb.ts";
import type { PromptSchema } from "#core/gen/lightreasoner/v1/common_pb.ts";
import type { TextTokenizer } from "#core/formats/tokenizer.ts";

/** The reference's system prompt. */
export const SYSTEM_PROMPT = "Please reason step by step.";

/** The contract's Prompt for one question; an empty system prompt sends none. */
export function chatPrompt(question: string, systemPrompt: string = SYSTEM_PROMPT): MessageInitShape<typeof PromptSchema> {
  return { source: { case: "chat", value: { systemPrompt, messages: [{ role: ChatRole.USER, content: question }] } } };
}

/** The prompt's token ids as the inference server encodes the same ChatPrompt. */
export function encodeChatPrompt(tokenizer: TextTokenizer, question: string, systemPrompt: string = SYSTEM_PROMPT): number[] {
  const turns = systemPrompt === "" ? [] : [{ role: "system", content: systemPrompt }];
  turns.push({ role: "user", content: question });
  const text = tokenizer.renderChat(turns, { addGenerationPrompt: true });
  return tokenizer.encode(text, { addSpecialTokens: false });
}
