// Final-answer extraction and comparison, shared by GSM8K and the built-in world: the
// reference answer of a problem file and a model's free-form output are both reduced to one
// number, so "15", "15.0", "$15" and "#### 15" all count as the same answer.

/** The GSM8K final-answer marker; the final answer follows its last occurrence. */
export const ANSWER_MARKER = "####";

// One number as people and models write it: optional sign (only where it cannot be a binary
// minus, i.e. not right after a digit), optional "$", thousands groups of exactly three
// digits ("1,500"; "1,2,3" stays three numbers), optional decimals. A trailing sentence
// period ("15.") is not a decimal point.
const NUMBER = /(?<![\d.])(-)?\$?((?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)/g;

function toNumber(match: RegExpMatchArray): number {
  const digits = match[2].replaceAll(",", "");
  const value = Number(digits);
  return match[1] ? -value : value;
}

/**
 * Parses a whole string as one number ("1,234", "$15", "-3.5", "15.0"; surrounding spaces
 * and a trailing "." or "%" allowed). Null when the string is anything else.
 */
export function parseNumber(text: string): number | null {
  const trimmed = text.trim().replace(/[.%]$/, "");
  const matches = [...trimmed.matchAll(NUMBER)];
  if (matches.length !== 1 || matches[0][0] !== trimmed) return null;
  const value = toNumber(matches[0]);
  return Number.isFinite(value) ? value : null;
}

/** All numbers in the text, in order of appearance. */
export function numbersIn(text: string): number[] {
  return [...text.matchAll(NUMBER)].map(toNumber).filter(Number.isFinite);
}

/**
 * The reference answer of a GSM8K-layout `answer` field: the text after the final `####`
 * must be exactly one number. Null when there is no marker or the rest is not a number;
 * references are data, so nothing looser is accepted.
 */
export function referenceAnswer(answer: string): number | null {
  const at = answer.lastIndexOf(ANSWER_MARKER);
  if (at < 0) return null;
  return parseNumber(answer.slice(at + ANSWER_MARKER.length));
}

/**
 * The final answer in a model's output.
 * - If the output contains `####`, the answer is the first number on the same line after
 *   the LAST marker (so "#### 17 apples" gives 17 and text generated past the answer line is
 *   ignored); no number there means no answer (null): a malformed final line is not
 *   rescued by numbers elsewhere.
 * - Otherwise (documented fallback for outputs that never wrote the marker) the answer is
 *   the last number anywhere in the text; null if it has none.
 */
export function extractAnswer(text: string): number | null {
  const at = text.lastIndexOf(ANSWER_MARKER);
  if (at >= 0) {
    const line = text.slice(at + ANSWER_MARKER.length).split("\n", 1)[0];
    const first = numbersIn(line)[0];
    return first ?? null;
  }
  const all = numbersIn(text);
  return all.length > 0 ? all[all.length - 1] : null;
}

/** Equal as answers: exact when both are integers, else within a relative 1e-6 (0.1 + 0.2). */
export function answersEqual(a: number, b: number): boolean {
  if (Number.isInteger(a) && Number.isInteger(b)) return a === b;
  return Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(a), Math.abs(b));
}

/**
 * Whether a model output's final answer matches the reference. A string reference is read
 * with `parseNumber` (or, if it holds `####`, as a GSM8K answer field); an unreadable
 * reference is a caller bug and throws.
 */
export function isCorrect(output: string, reference: number | string): boolean {
  const expected =
    typeof reference === "number"
      ? reference
      : reference.includes(ANSWER_MARKER)
        ? referenceAnswer(reference)
        : parseNumber(reference);
  if (expected === null || !Number.isFinite(expected)) {
    throw new RangeError(`reference answer ${JSON.stringify(reference)} is not a number`);
  }
  const predicted = extractAnswer(output);
  return predicted !== null && answersEqual(predicted, expected);
}
