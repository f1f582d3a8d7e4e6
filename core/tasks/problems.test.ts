import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { isCorrect } from "./answers.ts";
import { ProblemFileError } from "./errors.ts";
import { parseProblems, problemId, readProblems } from "./problems.ts";
import { errorOf } from "#test/helpers/error-of.ts";

const gsm8kDir = resolve(process.cwd(), "../shared/data/gsm8k");

describe("parseProblems", () => {
  it("reads the GSM8K layout and skips empty lines", () => {
    const text = [
      JSON.stringify({ question: "Q one?", answer: "1 + 1 = 2\n#### 2" }),
      "",
      "   ",
      JSON.stringify({ question: "Q two?", answer: "#### 1,234" }),
    ].join("\n");
    const set = parseProblems(text, "p.jsonl");
    expect(set.layout).toBe("gsm8k");
    expect(set.problems.map((p) => [p.line, p.reference])).toEqual([
      [1, 2],
      [4, 1234],
    ]);
    expect(set.problems[0].id).toBe(problemId("Q one?"));
    expect(set.problems[0].id).toMatch(/^[0-9a-f]{16}$/);
    expect(set.problems[0].solution).toBe("1 + 1 = 2\n#### 2");
  });

  it("reads the prompt layout with and without answers", () => {
    const text = [
      JSON.stringify({ prompt: "A" }),
      JSON.stringify({ prompt: "B", answer: 7 }),
      JSON.stringify({ prompt: "C", answer: "$1,500" }),
      JSON.stringify({ prompt: "D", answer: "2 + 2 = 4\n#### 4" }),
      JSON.stringify({ prompt: "E", answer: null }),
    ].join("\n");
    const set = parseProblems(text, "p.jsonl");
    expect(set.layout).toBe("prompt");
    expect(set.problems.map((p) => p.reference)).toEqual([null, 7, 1500, 4, null]);
    expect(set.problems.every((p) => p.solution === null)).toBe(true);
  });

  it("gives equal texts equal ids and skips repeated questions", () => {
    const line = JSON.stringify({ prompt: "same" });
    const set = parseProblems([line, JSON.stringify({ prompt: "other" }), line].join("\n"), "p.jsonl");
    expect(set.problems.map((p) => p.question)).toEqual(["same", "other"]);
    expect(set.duplicateLines).toEqual([3]);
    expect(problemId("same")).not.toBe(problemId("same "));
  });

  it.each([
    [`{"question": 5, "answer": "#### 1"}`, `problems.jsonl:17: "question" must be a string`],
    [`{"question": "  ", "answer": "#### 1"}`, `problems.jsonl:17: "question" must not be empty`],
    [`{"question": "Q", "answer": "no marker"}`, `problems.jsonl:17: "answer" must end with "#### <number>"`],
    [`{"question": "Q"}`, `problems.jsonl:17: "answer" must be a string`],
    [`{"prompt": "Q", "answer": "many"}`, `problems.jsonl:17: "answer" must be a number`],
    [`{"prompt": "Q", "answer": true}`, `problems.jsonl:17: "answer" must be a number`],
    [`{"text": "Q"}`, `problems.jsonl:17: expected a "question" field`],
    [`[1, 2]`, `problems.jsonl:17: must be a JSON object`],
    [`{"question": "Q",`, `problems.jsonl:17: is not valid JSON`],
  ])("names file, line and field: %s", (bad, message) => {
    const text = "\n".repeat(16) + bad;
    const err = errorOf(() => parseProblems(text, "problems.jsonl"));
    expect(err).toBeInstanceOf(ProblemFileError);
    expect(err.message.startsWith(message)).toBe(true);
    expect((err as ProblemFileError).line).toBe(17);
  });

  it("holds every line to the layout of the first", () => {
    const text = [JSON.stringify({ question: "Q", answer: "#### 1" }), JSON.stringify({ prompt: "P" })].join("\n");
    expect(() => parseProblems(text, "mixed.jsonl")).toThrow(`mixed.jsonl:2: "question" must be a string`);
  });

  it("rejects a blank file and a missing file", () => {
    expect(() => parseProblems("\n  \n\n", "blank.jsonl")).toThrow(/blank\.jsonl: holds no problems/);
    expect(() => parseProblems("", "empty.jsonl")).toThrow(/empty\.jsonl: holds no problems/);
    expect(() => readProblems("/nonexistent/problems.jsonl")).toThrow(/\/nonexistent\/problems\.jsonl: cannot read/);
  });

  it("reads a file from disk", () => {
    const dir = mkdtempSync(join(tmpdir(), "problems-"));
    const file = join(dir, "p.jsonl");
    writeFileSync(file, `${JSON.stringify({ question: "How many?", answer: "#### 3" })}\n`);
    const set = readProblems(file);
    expect(set.file).toBe(file);
    expect(set.problems).toHaveLength(1);
  });
});

describe.skipIf(!existsSync(gsm8kDir))("the real GSM8K data set (../shared/data/gsm8k)", () => {
  it.each([
    ["train.jsonl", 7473],
    ["test.jsonl", 1319],
  ])("%s: every line parses and every reference is a finite number", (name, lines) => {
    const set = readProblems(join(gsm8kDir, name));
    expect(set.layout).toBe("gsm8k");
    expect(set.problems).toHaveLength(lines);
    expect(set.duplicateLines).toEqual([]);
    for (const p of set.problems) {
      expect(Number.isFinite(p.reference)).toBe(true);
      // the worked solution itself, read as a model output, gets its own reference right
      expect(isCorrect(p.solution!, p.reference!)).toBe(true);
    }
    expect(new Set(set.problems.map((p) => p.id)).size).toBe(lines);
  });

  it("reads thousands separators in real references", () => {
    const set = readProblems(join(gsm8kDir, "train.jsonl"));
    const withComma = set.problems.filter((p) => /#### \d{1,3},\d{3}/.test(p.solution!));
    expect(withComma.length).toBeGreaterThan(0);
    for (const p of withComma) expect(p.reference!).toBeGreaterThanOrEqual(1000);
    expect(set.problems[0].reference).toBe(72);
  });
});
