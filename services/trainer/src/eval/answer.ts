// The answer check shared by sampling (which trajectories SFT may keep) and evaluation: the
// final number extracted from a completion against the problem's reference.
import { extractAnswer, isCorrect } from "#core/tasks/answers.ts";
import type { AnswerCheck } from "#trainer/store/records.ts";

export function checkAnswer(completion: string, reference: number | null): AnswerCheck {
  const predicted = extractAnswer(completion);
  return { predicted, reference, correct: reference === null ? null : isCorrect(completion, reference) };
}
