// Score's walk over a sequence, with the steps worked out by hand.
import { describe, expect, it } from "vitest";
import { SCORE_POSITIONS_PER_STEP, scoreSteps } from "./score-steps.ts";

describe("scoreSteps", () => {
  it("reports from position 1 in steps of 64 positions, the last one shorter", () => {
    expect(SCORE_POSITIONS_PER_STEP).toBe(64);
    expect(scoreSteps(150, 1, 512, true)).toEqual([
      { from: 0, length: 64, reports: true },
      { from: 64, length: 64, reports: true },
      { from: 128, length: 22, reports: true },
    ]);
  });

  it("reads the tokens before first_position in budget-sized steps that report nothing, then reports from first_position", () => {
    // Position 73 is the distribution after token 72: the first step reads tokens 0..71.
    expect(scoreSteps(150, 73, 512, true)).toEqual([
      { from: 0, length: 72, reports: false },
      { from: 72, length: 64, reports: true },
      { from: 136, length: 14, reports: true },
    ]);
    expect(scoreSteps(100, 80, 32, true)).toEqual([
      { from: 0, length: 32, reports: false },
      { from: 32, length: 32, reports: false },
      { from: 64, length: 15, reports: false },
      { from: 79, length: 21, reports: true },
    ]);
  });

  it("keeps a step's reported positions within a smaller budget, and reports position n after the last token", () => {
    expect(scoreSteps(40, 1, 16, true).map((s) => s.length)).toEqual([16, 16, 8]);
    expect(scoreSteps(5, 5, 512, true)).toEqual([
      { from: 0, length: 4, reports: false },
      { from: 4, length: 1, reports: true },
    ]);
  });

  it("runs one step over everything where the graphs cannot take tokens after a cache", () => {
    expect(scoreSteps(5000, 4000, 512, false)).toEqual([{ from: 0, length: 5000, reports: true }]);
  });
});
