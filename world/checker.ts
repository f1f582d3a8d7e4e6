// Checking a model's solution to a world problem: the final answer (through the shared
// answer extraction, as for GSM8K), the form (calculator lines then `#### N`), the
// arithmetic of every calculator line, and where the output first leaves the reference
// solution. The last two are for finding where the expert errs, and whether the steps the
// method selects are those places.
import { answersEqual, extractAnswer, referenceAnswer } from "#core/tasks/answers.ts";
import { applyOperator, type Operator } from "./arithmetic.ts";

export interface StepCheck {
  /** 0-based line of the output. */
  line: number;
  text: string;
  a: number;
  op: Operator;
  b: number;
  /** The result the line writes. */
  claimed: number;
  /** The true result; null when a division is not whole (or divides by zero). */
  actual: number | null;
  correct: boolean;
}

export interface SolutionCheck {
  /** The final answer equals the problem's. */
  correct: boolean;
  predicted: number | null;
  reference: number;
  /** At least one calculator line, nothing else, then a last line `#### N`: the world's format. */
  wellFormed: boolean;
  steps: StepCheck[];
  /** Index into `steps` of the first line with wrong arithmetic; null if all are right. */
  firstWrongStep: number | null;
  /** First output line that differs from the reference solution's; null if identical. */
  firstDivergence: number | null;
}

const CALC_LINE = /^(-?\d+) ([-+*/]) (-?\d+) = (-?\d+)$/;
const FINAL_LINE = /^#### \d+$/;

function linesOf(output: string): string[] {
  return output.trimEnd().split("\n");
}

/** Every calculator line (`a op b = c`) in the output, each checked; other lines are skipped. */
export function checkSteps(output: string): StepCheck[] {
  const steps: StepCheck[] = [];
  linesOf(output).forEach((text, line) => {
    const m = CALC_LINE.exec(text.trim());
    if (!m) return;
    const [a, op, b, claimed] = [Number(m[1]), m[2] as Operator, Number(m[3]), Number(m[4])];
    const actual = applyOperator(a, op, b);
    steps.push({ line, text, a, op, b, claimed, actual, correct: actual !== null && actual === claimed });
  });
  return steps;
}

/** Whether the output is exactly in the world's format (see `SolutionCheck.wellFormed`). */
export function isWellFormed(output: string): boolean {
  const lines = linesOf(output);
  if (lines.length < 2 || !FINAL_LINE.test(lines[lines.length - 1])) return false;
  return lines.slice(0, -1).every((line) => CALC_LINE.test(line));
}

function firstDifference(output: string[], reference: string[]): number | null {
  const shared = Math.min(output.length, reference.length);
  for (let i = 0; i < shared; i++) if (output[i] !== reference[i]) return i;
  return output.length === reference.length ? null : shared;
}

/** Checks a model output against a problem in the GSM8K layout (a world problem, or a line read back). */
export function checkSolution(problem: { answer: string }, output: string): SolutionCheck {
  const reference = referenceAnswer(problem.answer);
  if (reference === null) throw new RangeError(`problem answer has no final "#### N": ${JSON.stringify(problem.answer)}`);
  const predicted = extractAnswer(output);
  const steps = checkSteps(output);
  const wrong = steps.findIndex((s) => !s.correct);
  return {
    correct: predicted !== null && answersEqual(predicted, reference),
    predicted,
    reference,
    wellFormed: isWellFormed(output),
    steps,
    firstWrongStep: wrong < 0 ? null : wrong,
    firstDivergence: firstDifference(linesOf(output), linesOf(problem.answer)),
  };
}
