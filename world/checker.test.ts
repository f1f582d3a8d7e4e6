import { describe, expect, it } from "vitest";
import { checkSolution, checkSteps, isWellFormed } from "./checker.ts";

const problem = {
  question: "Tom has 12 apples. Tom buys 3 bags of 4 apples. Tom loses 5 apples. How many apples does Tom have now?",
  answer: "3 * 4 = 12\n12 + 12 = 24\n24 - 5 = 19\n#### 19",
};

describe("checkSolution", () => {
  it("accepts the reference itself", () => {
    expect(checkSolution(problem, problem.answer)).toMatchObject({
      correct: true,
      predicted: 19,
      reference: 19,
      wellFormed: true,
      firstWrongStep: null,
      firstDivergence: null,
    });
  });

  it("finds the first wrong calculator line and where the output leaves the reference", () => {
    const output = "3 * 4 = 12\n12 + 12 = 25\n25 - 5 = 20\n#### 20";
    const check = checkSolution(problem, output);
    expect(check.correct).toBe(false);
    expect(check.wellFormed).toBe(true);
    expect(check.predicted).toBe(20);
    expect(check.steps.map((s) => s.correct)).toEqual([true, false, true]);
    expect(check.steps[1]).toMatchObject({ line: 1, a: 12, op: "+", b: 12, claimed: 25, actual: 24 });
    expect(check.firstWrongStep).toBe(1);
    expect(check.firstDivergence).toBe(1);
  });

  it("tells a wrong plan with right arithmetic from an arithmetic slip", () => {
    // adds the bag count instead of multiplying: every line is right, the answer is not
    const output = "12 + 3 = 15\n15 - 5 = 10\n#### 10";
    const check = checkSolution(problem, output);
    expect(check.correct).toBe(false);
    expect(check.firstWrongStep).toBeNull();
    expect(check.firstDivergence).toBe(0);
  });

  it("counts a right answer in a malformed solution as correct but not well-formed", () => {
    const output = "3 * 4 = 12\nso 12 + 12 = 24\n24 - 5 = 19\n#### 19";
    const check = checkSolution(problem, output);
    expect(check.correct).toBe(true);
    expect(check.wellFormed).toBe(false);
    expect(check.steps.map((s) => s.line)).toEqual([0, 2]);
  });

  it("falls back to the last number when the marker is missing", () => {
    const check = checkSolution(problem, "3 * 4 = 12\n12 + 12 = 24\n24 - 5 = 19");
    expect(check.predicted).toBe(19);
    expect(check.correct).toBe(true);
    expect(check.wellFormed).toBe(false);
    expect(check.firstDivergence).toBe(3);
  });

  it("reports a solution that stops early or runs on", () => {
    expect(checkSolution(problem, "3 * 4 = 12").firstDivergence).toBe(1);
    expect(checkSolution(problem, `${problem.answer}\n1 + 1 = 2`).firstDivergence).toBe(4);
    expect(checkSolution(problem, `${problem.answer}\n`).firstDivergence).toBeNull();
  });

  it("throws on a problem without a reference answer", () => {
    expect(() => checkSolution({ answer: "no answer" }, "#### 1")).toThrow(/no final/);
  });
});

describe("checkSteps", () => {
  it("checks each operator, and a division that is not whole is wrong", () => {
    const steps = checkSteps("7 - 9 = -2\n8 / 3 = 2\n9 / 0 = 0\n6 / 3 = 2\n7 * 8 = 54\nnot a step\n#### 2");
    expect(steps.map((s) => [s.actual, s.correct])).toEqual([
      [-2, true],
      [null, false],
      [null, false],
      [2, true],
      [56, false],
    ]);
  });
});

describe("isWellFormed", () => {
  it.each([
    ["1 + 2 = 3\n#### 3", true],
    ["1 + 2 = 3\n#### 3\n", true],
    ["#### 3", false],
    ["1 + 2 = 3", false],
    ["1 + 2 = 3\n#### 3\n2 + 2 = 4", false],
    ["1 + 2 = 3\n#### three", false],
    ["1+2=3\n#### 3", false],
    ["", false],
  ])("%j -> %s", (output, expected) => {
    expect(isWellFormed(output)).toBe(expected);
  });
});
