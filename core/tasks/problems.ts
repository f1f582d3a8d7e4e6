// Problems for sampling and evaluation, read from JSON lines files in either of the two
// layouts users bring: GSM8K (`{"question", "answer"}`, final answer after `#### `) and a
// plain prompt layout (`{"prompt", "answer"?}`). Each problem gets an id derived from its
// text, so samples are keyed by a short stable hash rather than by the question itself.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { ModelFormatError } from "#core/model/errors.ts";
import { ANSWER_MARKER, parseNumber, referenceAnswer } from "./answers.ts";
import { ProblemFileError } from "./errors.ts";

export type ProblemLayout = "gsm8k" | "prompt";

export interface Problem {
  /** First 16 hex digits of sha256(question): equal texts, equal ids, in any file. */
  id: string;
  /** The text that goes into the user message. */
  question: string;
  /** The reference final answer; null only for prompt-layout lines without an answer. */
  reference: number | null;
  /** The GSM8K `answer` field (worked solution + `#### N`); null in the prompt layout. */
  solution: string | null;
  /** 1-based line in the source file. */
  line: number;
}

export interface ProblemSet {
  file: string;
  layout: ProblemLayout;
  problems: Problem[];
  /** Lines skipped because their question repeats an earlier line (same id). */
  duplicateLines: number[];
}

/** The stable id of a problem: first 16 hex digits (64 bits) of sha256 of its exact text. */
export function problemId(question: string): string {
  return createHash("sha256").update(question, "utf8").digest("hex").slice(0, 16);
}

function detectLayout(record: Record<string, unknown>, file: string, line: number): ProblemLayout {
  if ("question" in record) return "gsm8k";
  if ("prompt" in record) return "prompt";
  throw new ProblemFileError(
    file,
    line,
    null,
    `expected a "question" field (GSM8K layout) or a "prompt" field (prompt layout), found ${JSON.stringify(Object.keys(record))}`,
  );
}

function nonEmptyString(record: Record<string, unknown>, field: string, file: string, line: number): string {
  const value = record[field];
  if (typeof value !== "string") throw new ProblemFileError(file, line, field, "must be a string");
  if (value.trim() === "") throw new ProblemFileError(file, line, field, "must not be empty");
  return value;
}

function gsm8kProblem(record: Record<string, unknown>, file: string, line: number): Problem {
  const question = nonEmptyString(record, "question", file, line);
  const solution = nonEmptyString(record, "answer", file, line);
  const reference = referenceAnswer(solution);
  if (reference === null) {
    throw new ProblemFileError(file, line, "answer", `must end with "${ANSWER_MARKER} <number>"`);
  }
  return { id: problemId(question), question, reference, solution, line };
}

function promptReference(value: unknown, file: string, line: number): number | null {
  if (value === undefined || value === null) return null;
  if (typeof value === "number" && Number.isFinite(value)) return value;
  if (typeof value === "string") {
    const parsed = value.includes(ANSWER_MARKER) ? referenceAnswer(value) : parseNumber(value);
    if (parsed !== null) return parsed;
  }
  throw new ProblemFileError(
    file,
    line,
    "answer",
    `must be a number, a numeric string, or text ending with "${ANSWER_MARKER} <number>", got ${JSON.stringify(value)}`,
  );
}

function promptProblem(record: Record<string, unknown>, file: string, line: number): Problem {
  const question = nonEmptyString(record, "prompt", file, line);
  const reference = promptReference(record.answer, file, line);
  return { id: problemId(question), question, reference, solution: null, line };
}

function parseRecord(text: string, file: string, line: number): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ProblemFileError(file, line, null, `is not valid JSON (${(err as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProblemFileError(file, line, null, "must be a JSON object");
  }
  return value as Record<string, unknown>;
}

/**
 * Parses the text of a JSON lines problems file. The layout is detected from the first
 * non-empty line and every other line must follow it. Empty lines are skipped; a later line
 * whose question repeats an earlier one is skipped and listed in `duplicateLines`.
 * `file` only names the source in errors.
 */
export function parseProblems(text: string, file: string): ProblemSet {
  let layout: ProblemLayout | null = null;
  const problems: Problem[] = [];
  const duplicateLines: number[] = [];
  const seen = new Set<string>();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i].trim();
    if (raw === "") continue;
    const line = i + 1;
    const record = parseRecord(raw, file, line);
    layout ??= detectLayout(record, file, line);
    const problem = layout === "gsm8k" ? gsm8kProblem(record, file, line) : promptProblem(record, file, line);
    if (seen.has(problem.id)) {
      duplicateLines.push(line);
      continue;
    }
    seen.add(problem.id);
    problems.push(problem);
  }
  if (layout === null) throw new ModelFormatError(file, "holds no problems (every line is empty)");
  return { file, layout, problems, duplicateLines };
}

/** Reads and parses a JSON lines problems file (see `parseProblems`). */
export function readProblems(file: string): ProblemSet {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new ModelFormatError(file, `cannot read problems file (${(err as Error).message})`);
  }
  return parseProblems(text, file);
}
