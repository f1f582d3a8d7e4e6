// Writes the built-in world's data set: `train.jsonl`, `test.jsonl` and (when asked for)
// `validation.jsonl` in the GSM8K layout (`{"question", "answer"}`), so the problems reader,
// the pretraining and the evaluation all read it like real data. Validation is where settings
// are tuned; test is read once, with the settings frozen. Returns what a person checks before
// training on it: counts, the mix of families and step counts, and token lengths under the
// world tokenizer.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { generateProblems, resolveDifficulty, type ArithmeticProblem, type Split, type WorldDifficulty } from "./arithmetic.ts";
import { WorldConfigError } from "./errors.ts";
import { CHAT_TEMPLATE, REASONING_SYSTEM_PROMPT, SPECIAL_TOKENS, loadWorldTokenizer, worldVocabulary } from "./tokenizer.ts";

export interface BuildDataOptions {
  outDir: string;
  trainCount: number;
  testCount: number;
  /** Validation problems; 0 or absent writes no validation file. */
  validationCount?: number;
  seed: number;
  difficulty?: Partial<WorldDifficulty>;
}

export interface LengthStats {
  min: number;
  max: number;
  mean: number;
  p50: number;
  p95: number;
}

export interface SplitStats {
  file: string;
  count: number;
  /** Problems per number of calculator lines. */
  steps: Record<string, number>;
  families: Record<string, number>;
  finalAnswer: { min: number; max: number; mean: number };
  /** In world-tokenizer tokens: question text, solution text, and the whole chat-rendered sequence. */
  tokens: { question: LengthStats; solution: LengthStats; sequence: LengthStats };
}

export interface WorldDataStats {
  outDir: string;
  seed: number;
  difficulty: WorldDifficulty;
  vocabSize: number;
  train: SplitStats;
  /** null when no validation split was asked for. */
  validation: SplitStats | null;
  test: SplitStats;
}

/**
 * The training sequence of one problem as pretraining sees it: system prompt, question and
 * worked solution through the world chat template (ending in `<|eos|>`).
 */
export function renderWorldSequence(question: string, answer: string, template = new Template(CHAT_TEMPLATE)): string {
  return template.render({
    messages: [
      { role: "system", content: REASONING_SYSTEM_PROMPT },
      { role: "user", content: question },
      { role: "assistant", content: answer },
    ],
    bos_token: SPECIAL_TOKENS.bos,
    eos_token: SPECIAL_TOKENS.eos,
    add_generation_prompt: false,
  });
}

export function lengthStats(values: number[]): LengthStats {
  if (values.length === 0) return { min: 0, max: 0, mean: 0, p50: 0, p95: 0 };
  const sorted = [...values].sort((x, y) => x - y);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  const mean = sorted.reduce((sum, v) => sum + v, 0) / sorted.length;
  return { min: sorted[0], max: sorted[sorted.length - 1], mean: Math.round(mean * 10) / 10, p50: at(0.5), p95: at(0.95) };
}

function countBy(problems: ArithmeticProblem[], key: (p: ArithmeticProblem) => string | number): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const p of problems) counts[String(key(p))] = (counts[String(key(p))] ?? 0) + 1;
  return counts;
}

function splitStats(file: string, problems: ArithmeticProblem[]): SplitStats {
  const tokenizer = loadWorldTokenizer();
  const template = new Template(CHAT_TEMPLATE);
  const count = (text: string) => tokenizer.encode(text).ids.length;
  const finals = problems.map((p) => p.final);
  return {
    file,
    count: problems.length,
    steps: countBy(problems, (p) => p.steps.length),
    families: countBy(problems, (p) => p.family),
    finalAnswer: {
      min: finals.length ? Math.min(...finals) : 0,
      max: finals.length ? Math.max(...finals) : 0,
      mean: finals.length ? Math.round((finals.reduce((s, v) => s + v, 0) / finals.length) * 10) / 10 : 0,
    },
    tokens: {
      question: lengthStats(problems.map((p) => count(p.question))),
      solution: lengthStats(problems.map((p) => count(p.answer))),
      sequence: lengthStats(problems.map((p) => count(renderWorldSequence(p.question, p.answer, template)))),
    },
  };
}

function writeSplit(outDir: string, split: Split, problems: ArithmeticProblem[]): string {
  const file = join(outDir, `${split}.jsonl`);
  const lines = problems.map((p) => JSON.stringify({ question: p.question, answer: p.answer }));
  writeFileSync(file, `${lines.join("\n")}\n`);
  return file;
}

/**
 * Generates `trainCount`, `validationCount` and `testCount` distinct problems (the splits
 * disjoint by construction, see arithmetic.ts) from `seed`, writes `train.jsonl`,
 * `validation.jsonl` (only when validationCount > 0) and `test.jsonl` into `outDir` (created
 * if missing), and returns their statistics. Each split is its own stream, so the count of
 * one never changes the problems of another.
 */
export function buildWorldData(options: BuildDataOptions): WorldDataStats {
  const difficulty = resolveDifficulty(options.difficulty);
  for (const key of ["trainCount", "testCount"] as const) {
    // an empty file is not a problems file (the reader rejects it), so each split holds one or more
    if (!Number.isInteger(options[key]) || options[key] < 1) {
      throw new WorldConfigError(key, `must be a whole number >= 1, got ${options[key]}`);
    }
  }
  const validationCount = options.validationCount ?? 0;
  if (!Number.isInteger(validationCount) || validationCount < 0) {
    throw new WorldConfigError("validationCount", `must be a whole number >= 0, got ${validationCount}`);
  }
  mkdirSync(options.outDir, { recursive: true });
  const stats = (split: Split, count: number) => {
    const problems = generateProblems(count, { seed: options.seed, split, difficulty });
    return splitStats(writeSplit(options.outDir, split, problems), problems);
  };
  return {
    outDir: options.outDir,
    seed: options.seed,
    difficulty,
    vocabSize: worldVocabulary().length,
    train: stats("train", options.trainCount),
    validation: validationCount > 0 ? stats("validation", validationCount) : null,
    test: stats("test", options.testCount),
  };
}
