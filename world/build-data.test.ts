import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { readProblems } from "#core/tasks/problems.ts";
import { canonicalOf, splitOf } from "./arithmetic.ts";
import { buildWorldData, lengthStats } from "./build-data.ts";
import { checkSolution } from "./checker.ts";
import { WorldConfigError } from "./errors.ts";

const tmp = () => mkdtempSync(join(tmpdir(), "world-data-"));

describe("buildWorldData", () => {
  const dir = tmp();
  const stats = buildWorldData({ outDir: join(dir, "nested"), trainCount: 600, validationCount: 120, testCount: 150, seed: 3 });

  it("writes GSM8K-layout files the problems reader takes as they are", () => {
    const train = readProblems(stats.train.file);
    const validation = readProblems(stats.validation!.file);
    const test = readProblems(stats.test.file);
    expect(train.layout).toBe("gsm8k");
    expect(train.problems).toHaveLength(600);
    expect(validation.problems).toHaveLength(120);
    expect(test.problems).toHaveLength(150);
    expect(train.duplicateLines).toEqual([]);
    const trainIds = new Set(train.problems.map((p) => p.id));
    const validationIds = new Set(validation.problems.map((p) => p.id));
    expect(test.problems.filter((p) => trainIds.has(p.id) || validationIds.has(p.id))).toEqual([]);
    expect(validation.problems.filter((p) => trainIds.has(p.id))).toEqual([]);
    for (const [split, problems] of [["validation", validation.problems], ["test", test.problems]] as const) {
      for (const p of problems) {
        expect(splitOf(canonicalOf(p.question))).toBe(split);
        expect(checkSolution({ answer: p.solution! }, p.solution!).correct).toBe(true);
      }
    }
  });

  it("writes no validation file when none is asked for, and the other splits do not depend on it", () => {
    const without = tmp();
    const plain = buildWorldData({ outDir: without, trainCount: 600, testCount: 150, seed: 3 });
    expect(plain.validation).toBeNull();
    expect(existsSync(join(without, "validation.jsonl"))).toBe(false);
    expect(readFileSync(plain.train.file)).toEqual(readFileSync(stats.train.file));
    expect(readFileSync(plain.test.file)).toEqual(readFileSync(stats.test.file));
  });

  it("returns statistics that add up", () => {
    for (const split of [stats.train, stats.validation!, stats.test]) {
      expect(Object.values(split.steps).reduce((a, b) => a + b, 0)).toBe(split.count);
      expect(Object.values(split.families).reduce((a, b) => a + b, 0)).toBe(split.count);
      const { question, solution, sequence } = split.tokens;
      expect(sequence.min).toBeGreaterThan(question.min + solution.min);
      expect(sequence.max).toBeLessThan(128);
      expect(question.mean + solution.mean).toBeLessThan(100);
    }
    expect(stats.vocabSize).toBeLessThan(256);
    expect(stats.difficulty.maxSteps).toBe(4);
  });

  it("is reproducible from the seed, byte for byte", () => {
    const again = tmp();
    buildWorldData({ outDir: again, trainCount: 600, validationCount: 120, testCount: 150, seed: 3 });
    for (const file of ["train.jsonl", "validation.jsonl", "test.jsonl"]) {
      expect(readFileSync(join(again, file))).toEqual(readFileSync(join(dir, "nested", file)));
    }
  });

  it("rejects empty splits and bad knobs before writing", () => {
    expect(() => buildWorldData({ outDir: tmp(), trainCount: 0, testCount: 5, seed: 1 })).toThrow(/trainCount: must be a whole number >= 1/);
    expect(() => buildWorldData({ outDir: tmp(), trainCount: 5, validationCount: -1, testCount: 5, seed: 1 })).toThrow(/validationCount: must be a whole number >= 0/);
    expect(() => buildWorldData({ outDir: tmp(), trainCount: 5, testCount: 5, seed: 1, difficulty: { maxFactor: 0 } })).toThrow(WorldConfigError);
  });
});

describe("lengthStats", () => {
  it("summarises a distribution", () => {
    expect(lengthStats([5, 1, 3, 2, 4])).toEqual({ min: 1, max: 5, mean: 3, p50: 3, p95: 5 });
    expect(lengthStats([])).toEqual({ min: 0, max: 0, mean: 0, p50: 0, p95: 0 });
  });
});
