import { describe, expect, it } from "vitest";
import { SENTENCES } from "./lexicon.ts";
import {
  DEFAULT_DIFFICULTY,
  applyOperator,
  arithmeticProblems,
  canonicalOf,
  formatSolution,
  generateProblems,
  resolveDifficulty,
  splitOf,
  type ArithmeticProblem,
} from "./arithmetic.ts";
import { checkSolution } from "./checker.ts";
import { WorldConfigError } from "./errors.ts";

// One shared draw for the heavier checks: 20k train and 2k test problems.
const train = generateProblems(20_000, { seed: 7, split: "train" });
const test = generateProblems(2_000, { seed: 7, split: "test" });

describe("train/test split", () => {
  it("shares no problem, by question text or by canonical content", () => {
    const trainQuestions = new Set(train.map((p) => p.question));
    const trainCanonical = new Set(train.map((p) => p.canonical));
    expect(test.filter((p) => trainQuestions.has(p.question))).toEqual([]);
    expect(test.filter((p) => trainCanonical.has(p.canonical))).toEqual([]);
  });

  it("is a function of the question text alone", () => {
    for (const p of [...train, ...test]) {
      expect(canonicalOf(p.question)).toBe(p.canonical);
      expect(splitOf(p.canonical)).toBe(p.split);
    }
    expect(train.every((p) => p.split === "train")).toBe(true);
    expect(test.every((p) => p.split === "test")).toBe(true);
  });

  it("gives distinct problems within a split", () => {
    expect(new Set(train.map((p) => p.canonical)).size).toBe(train.length);
    expect(new Set(test.map((p) => p.question)).size).toBe(test.length);
    expect(new Set(train.map((p) => p.id)).size).toBe(train.length);
  });

  it("sends about one canonical content in ten to test", () => {
    const keys = Array.from({ length: 20_000 }, (_, i) => `has add askHave|${i} ${i + 1}`);
    const share = keys.filter((k) => splitOf(k) === "test").length / keys.length;
    expect(share).toBeGreaterThan(0.09);
    expect(share).toBeLessThan(0.11);
  });

  it("erases names, objects and wording variants from the canonical content", () => {
    const a = canonicalOf("Tom has 12 apples. Tom buys 5 more apples. How many apples does Tom have now?");
    const b = canonicalOf("Mia has 12 coins. Ann gives Mia 5 more coins. How many coins does Mia have now?");
    const c = canonicalOf("Mia has 12 coins. Mia loses 5 coins. How many coins does Mia have now?");
    expect(a).toBe("has add askHave|12 5");
    expect(b).toBe(a);
    expect(c).toBe("has sub askHave|12 5");
  });

  it("determines the solution: equal canonical content, equal worked steps", () => {
    const solutionOf = new Map<string, string>();
    let repeats = 0;
    const stream = arithmeticProblems({ seed: 3, split: "train" });
    for (let i = 0; i < 30_000; i++) {
      const p = stream.next().value as ArithmeticProblem;
      const known = solutionOf.get(p.canonical);
      if (known === undefined) solutionOf.set(p.canonical, p.answer);
      else {
        repeats++;
        expect(p.answer, p.canonical).toBe(known);
      }
    }
    expect(repeats).toBeGreaterThan(100); // the check saw real collisions
  });

  it("rejects text the world could not have written", () => {
    expect(() => canonicalOf("Tom has 12 pears. How many pears does Tom have now?")).toThrow(WorldConfigError);
    expect(() => canonicalOf("Tom has 12 apples.  How many apples does Tom have now?")).toThrow(/not a world sentence/);
  });
});

describe("generated problems", () => {
  const all = [...train, ...test];

  it("are deterministic in the seed, and the test stream does not depend on the train count", () => {
    expect(generateProblems(50, { seed: 7, split: "train" })).toEqual(train.slice(0, 50));
    expect(generateProblems(50, { seed: 7, split: "test" })).toEqual(test.slice(0, 50));
    const other = generateProblems(50, { seed: 8, split: "train" });
    expect(other.filter((p, i) => p.question === train[i].question).length).toBeLessThan(5);
  });

  it("have whole, in-range values and correct worked solutions", () => {
    const d = DEFAULT_DIFFICULTY;
    for (const p of all) {
      expect(p.steps.length).toBeGreaterThanOrEqual(d.minSteps);
      expect(p.steps.length).toBeLessThanOrEqual(d.maxSteps);
      for (const s of p.steps) {
        expect(applyOperator(s.a, s.op, s.b)).toBe(s.result);
        expect(Number.isInteger(s.result) && s.result >= 0 && s.result <= d.maxResult).toBe(true);
        if (s.op === "*") expect(Math.max(s.a, s.b)).toBeLessThanOrEqual(d.maxFactor);
        if (s.op === "/") expect(s.b).toBeLessThanOrEqual(d.maxFactor);
        if (s.op === "/") expect(s.result).toBeLessThanOrEqual(d.maxNumber);
      }
      expect(p.answer).toBe(formatSolution(p.steps));
      expect(p.answer.endsWith(`\n#### ${p.final}`)).toBe(true);
      expect(p.final).toBe(p.steps[p.steps.length - 1].result);
      expect(p.final).toBeGreaterThanOrEqual(1);
    }
  });

  it("never write a count below 2 before a plural noun", () => {
    for (const p of all) expect(p.question).not.toMatch(/\b[01] [a-z]/);
  });

  it("pass their own checker", () => {
    for (const p of all.slice(0, 3000)) {
      const check = checkSolution(p, p.answer);
      expect(check.correct && check.wellFormed).toBe(true);
      expect(check.firstWrongStep).toBeNull();
      expect(check.firstDivergence).toBeNull();
    }
  });

  it("use every sentence variant and every family and step count", () => {
    const used = new Set<string>();
    for (const p of all) for (const s of p.question.split(/(?<=[.?]) /)) used.add(s.replace(/\d+/g, "N"));
    for (const [kind, variants] of Object.entries(SENTENCES)) {
      for (const template of variants) {
        const literal = template.split(/\{\w+\}/).filter((part) => part.length > 2);
        const seen = [...used].some((s) => literal.every((part) => s.includes(part)));
        expect(seen, `${kind}: ${template}`).toBe(true);
      }
    }
    const mix = new Set(all.map((p: ArithmeticProblem) => `${p.family}:${p.steps.length}`));
    for (const key of ["story:2", "story:3", "story:4", "compare:2", "compare:3", "compare:4", "shop:2", "shop:3", "shop:4"]) {
      expect(mix.has(key), key).toBe(true);
    }
  });
});

describe("difficulty knob", () => {
  it("bounds steps, families and numbers", () => {
    const easy = { minSteps: 2, maxSteps: 2, maxNumber: 9, maxFactor: 3, maxResult: 40, families: ["compare"] as const };
    const problems = generateProblems(300, { seed: 1, split: "train", difficulty: easy });
    for (const p of problems) {
      expect(p.family).toBe("compare");
      expect(p.steps).toHaveLength(2);
      for (const s of p.steps) expect(s.result).toBeLessThanOrEqual(40);
      for (const n of p.question.match(/\d+/g)!.map(Number)) expect(n).toBeLessThanOrEqual(9);
    }
  });

  it("drops division when asked", () => {
    const problems = generateProblems(2000, { seed: 1, split: "train", difficulty: { division: false } });
    expect(problems.some((p) => p.steps.some((s) => s.op === "/"))).toBe(false);
  });

  it("allows longer stories", () => {
    const problems = generateProblems(200, { seed: 1, split: "test", difficulty: { minSteps: 6, maxSteps: 6, families: ["story"] } });
    expect(problems.every((p) => p.steps.length === 6)).toBe(true);
  });

  it.each([
    [{ maxSteps: 1 }, /maxSteps: must be an integer >= 2/],
    [{ minSteps: 0 }, /minSteps/],
    [{ maxFactor: 1 }, /maxFactor/],
    [{ maxResult: 20 }, /maxResult/],
    [{ families: [] }, /families: must name at least one/],
    [{ families: ["poems" as never] }, /unknown family "poems"/],
    [{ families: ["shop"] as const, maxSteps: 5 }, /none of shop can make a 5-step problem/],
  ])("rejects %j", (overrides, message) => {
    expect(() => resolveDifficulty(overrides)).toThrow(message);
    expect(() => resolveDifficulty(overrides)).toThrow(WorldConfigError);
  });

  it("says when the settings allow too few distinct problems", () => {
    const tiny = { minSteps: 2, maxSteps: 2, maxNumber: 5, maxFactor: 2, families: ["shop"] as const };
    expect(() => generateProblems(500, { seed: 1, split: "test", difficulty: tiny })).toThrow(/distinct test problems/);
  });
});
