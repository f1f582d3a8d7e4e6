import { describe, expect, it } from "vitest";
import { TrainingConfigError } from "./errors.ts";
import { checkSchedule, learningRateAt, type LearningRateSchedule } from "./schedule.ts";

const base: LearningRateSchedule = { kind: "linear", peak: 1e-3, totalSteps: 11, warmupSteps: 0, minRatio: 0 };
const rates = (s: LearningRateSchedule) => Array.from({ length: s.totalSteps }, (_, i) => learningRateAt(s, i));

describe("learningRateAt", () => {
  it("linear decay without warm-up: the peak first, the floor last, evenly spaced", () => {
    const r = rates(base);
    expect(r[0]).toBe(1e-3);
    expect(r[5]).toBeCloseTo(0.5e-3, 15);
    expect(r[10]).toBe(0);
    for (let i = 1; i < r.length; i++) expect(r[i - 1] - r[i]).toBeCloseTo(1e-4, 15);
  });

  it("warm-up climbs linearly to the peak, then the cosine falls to the floor", () => {
    const s: LearningRateSchedule = { kind: "cosine", peak: 2, totalSteps: 14, warmupSteps: 4, minRatio: 0.1 };
    const r = rates(s);
    expect(r.slice(0, 4)).toEqual([0.5, 1, 1.5, 2]);
    expect(r[4]).toBe(2); // decay starts at the peak
    // Halfway through the decay (step 4 + 4.5): the floor plus half the range.
    expect(learningRateAt(s, 8.5)).toBeCloseTo(0.2 + 0.9, 12);
    // cos(pi/9) at one step in, by hand: 0.2 + 1.8 * (1 + 0.9396926) / 2.
    expect(r[5]).toBeCloseTo(0.2 + 1.8 * (1 + Math.cos(Math.PI / 9)) / 2, 12);
    expect(r[13]).toBeCloseTo(0.2, 12);
    for (let i = 5; i < r.length; i++) expect(r[i]).toBeLessThan(r[i - 1]);
  });

  it("constant stays at the peak after warm-up; a one-step run uses the peak", () => {
    expect(rates({ ...base, kind: "constant", warmupSteps: 2 })).toEqual([0.5e-3, 1e-3, ...Array(9).fill(1e-3)]);
    expect(learningRateAt({ ...base, totalSteps: 1 }, 0)).toBe(1e-3);
    expect(learningRateAt({ ...base, kind: "cosine", totalSteps: 1 }, 0)).toBe(1e-3);
  });

  it("linear decay to a floor", () => {
    const r = rates({ ...base, minRatio: 0.5 });
    expect(r[10]).toBeCloseTo(0.5e-3, 15);
    expect(r[5]).toBeCloseTo(0.75e-3, 15);
  });
});

describe("checkSchedule", () => {
  it("names the offending setting", () => {
    const bad = (s: Partial<LearningRateSchedule>, field: string) => {
      expect(() => checkSchedule({ ...base, ...s })).toThrow(TrainingConfigError);
      try {
        checkSchedule({ ...base, ...s });
      } catch (err) {
        expect((err as TrainingConfigError).field).toBe(field);
      }
    };
    bad({ peak: 0 }, "learningRate");
    bad({ totalSteps: 0 }, "maxSteps");
    bad({ warmupSteps: 11 }, "warmupSteps");
    bad({ minRatio: 1.5 }, "minLearningRateRatio");
    expect(() => checkSchedule(base)).not.toThrow();
  });
});
