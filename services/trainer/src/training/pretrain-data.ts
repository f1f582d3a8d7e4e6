// Pretraining data: problems in the GSM8K layout rendered as chat conversations (system
// prompt, the question as the user turn, the worked answer as the assistant turn) through
// the model's own chat template, so pretraining sees exactly the prompt the sampler later
// sends. Each becomes a trajectory whose prompt is the generation prompt's tokens, which is
// what the completion-only loss needs.
import type { TextTokenizer } from "#core/formats/tokenizer.ts";
import { ModelFormatError } from "#core/model/errors.ts";
import { readProblems } from "#core/tasks/problems.ts";
import { encodeChatPrompt, SYSTEM_PROMPT } from "#trainer/sampling/prompt.ts";
import type { Trajectory } from "./trajectory.ts";

export interface ChatSequenceOptions {
  /** Default: the method's "Please reason step by step."; "" sends none. */
  systemPrompt?: string;
  /** Sequences longer than this are cut to it. */
  seqLen: number;
}

export interface ChatSequences {
  file: string;
  sequences: Trajectory[];
  /** Sequences cut to seqLen. */
  truncated: number;
  /** Tokens over all sequences (after cutting). */
  tokens: number;
  /** Completion tokens over all sequences (after cutting). */
  completionTokens: number;
}

/** One conversation as token ids, with the generation prompt's length; `where` names it in errors. */
export function chatSequence(tokenizer: TextTokenizer, question: string, answer: string, systemPrompt: string, where: string): Trajectory {
  const prompt = encodeChatPrompt(tokenizer, question, systemPrompt);
  const turns = systemPrompt === "" ? [] : [{ role: "system", content: systemPrompt }];
  turns.push({ role: "user", content: question }, { role: "assistant", content: answer });
  const tokenIds = tokenizer.encode(tokenizer.renderChat(turns), { addSpecialTokens: false });
  // The completion-only loss and the sampler both rely on the prompt being a token-exact prefix.
  if (prompt.length >= tokenIds.length || prompt.some((id, i) => id !== tokenIds[i])) {
    throw new ModelFormatError(where, "the chat template's generation prompt does not tokenize as a prefix of the whole conversation");
  }
  return { tokenIds, promptLength: prompt.length, targets: [] };
}

/** Reads a GSM8K-layout JSON lines file (question + worked answer per line) as chat sequences. */
export function readChatSequences(file: string, tokenizer: TextTokenizer, options: ChatSequenceOptions): ChatSequences {
  const set = readProblems(file);
  if (set.layout !== "gsm8k") {
    throw new ModelFormatError(file, `pretraining needs worked answers: the GSM8K layout {"question", "answer"}, not the ${set.layout} layout`);
  }
  const systemPrompt = options.systemPrompt ?? SYSTEM_PROMPT;
  let truncated = 0;
  let tokens = 0;
  let completionTokens = 0;
  const sequences = set.problems.map((p) => {
    const whole = chatSequence(tokenizer, p.question, p.solution!, systemPrompt, `${file}:${p.line}`);
    const cut = whole.tokenIds.length > options.seqLen;
    if (cut) truncated++;
    const tokenIds = cut ? whole.tokenIds.slice(0, options.seqLen) : whole.tokenIds;
    tokens += tokenIds.length;
    completionTokens += Math.max(0, tokenIds.length - whole.promptLength);
    return { tokenIds, promptLength: Math.min(whole.promptLength, tokenIds.length), targets: [] };
  });
  return { file, sequences, truncated, tokens, completionTokens };
}
