import { describe, expect, it } from "vitest";
import { Z_95, pairedDifferenceInterval, wilsonInterval } from "./accuracy.ts";

describe("wilsonInterval", () => {
  it("matches the hand-computed interval for 42 of 50", () => {
    // p = 0.84, z = 1.96, z^2/n = 3.8416/50 = 0.076832
    // centre = (0.84 + 0.038416) / 1.076832 = 0.8157409
    // half   = 1.96 / 1.076832 * sqrt(0.84*0.16/50 + 0.076832/200)
    //        = 1.8201539 * sqrt(0.002688 + 0.00038416) = 1.8201539 * 0.0554270 = 0.1008858
    // -> [0.7148551903823402, 0.916626786379123]
    const ci = wilsonInterval(42, 50);
    expect(Z_95).toBe(1.96);
    expect(ci.estimate).toBe(0.84);
    expect(ci.lower).toBeCloseTo(0.7148551903823402, 12);
    expect(ci.upper).toBeCloseTo(0.916626786379123, 12);
  });

  it("stays informative at 0% and 100%", () => {
    // c = 0: the interval is [0, z^2 / (n + z^2)] = [0, 3.8416 / 13.8416] = [0, 0.2775401687666166].
    const none = wilsonInterval(0, 10);
    expect(none.lower).toBe(0);
    expect(none.upper).toBeCloseTo(0.2775401687666166, 12);
    // c = n: [n / (n + z^2), 1] = [10 / 13.8416, 1] = [0.7224598312333834, 1].
    const all = wilsonInterval(10, 10);
    expect(all.lower).toBeCloseTo(0.7224598312333834, 12);
    expect(all.upper).toBe(1);
  });

  it("rejects impossible counts by name", () => {
    expect(() => wilsonInterval(3, 0)).toThrow(/^total:/);
    expect(() => wilsonInterval(11, 10)).toThrow(/^correct: must be an integer in \[0, 10\]/);
    expect(() => wilsonInterval(1.5, 10)).toThrow(/^correct:/);
  });
});

describe("pairedDifferenceInterval", () => {
  it("matches the hand-computed interval", () => {
    // before = [T, F, F, T, F], after = [T, T, F, F, T] -> d = [0, 1, 0, -1, 1]
    // mean = 1/5 = 0.2; sum d^2 = 3; s^2 = (3 - 5 * 0.04) / 4 = 0.7; s = 0.8366600265340756
    // half = 1.96 * 0.8366600265340756 / sqrt(5) = 1.96 * 0.3741657386773941 = 0.7333648478076924
    // -> [-0.5333648478076924, 0.9333648478076924]
    const ci = pairedDifferenceInterval([true, false, false, true, false], [true, true, false, false, true]);
    expect(ci.n).toBe(5);
    expect(ci.improved).toBe(2);
    expect(ci.worsened).toBe(1);
    expect(ci.estimate).toBeCloseTo(0.2, 15);
    expect(ci.sd).toBeCloseTo(0.8366600265340756, 12);
    expect(ci.lower).toBeCloseTo(-0.5333648478076924, 12);
    expect(ci.upper).toBeCloseTo(0.9333648478076924, 12);
  });

  it("is narrower than two independent intervals when the same problems stay right", () => {
    // 100 problems, 60 right before; after training 5 more are right and none is lost.
    const before = Array.from({ length: 100 }, (_, i) => i < 60);
    const after = Array.from({ length: 100 }, (_, i) => i < 65);
    const ci = pairedDifferenceInterval(before, after);
    // d has five 1s: mean 0.05, s^2 = (5 - 100 * 0.0025) / 99 = 0.047979798, s = 0.21904291,
    // half = 1.96 * 0.021904291 = 0.042932 -> [0.007068, 0.092932]: the gain is significant.
    expect(ci.lower).toBeCloseTo(0.05 - 0.04293241, 6);
    expect(ci.lower).toBeGreaterThan(0);
    const a = wilsonInterval(60, 100);
    const b = wilsonInterval(65, 100);
    expect(b.lower).toBeLessThan(a.upper); // unpaired intervals overlap
  });

  it("rejects different problem counts and n < 2", () => {
    expect(() => pairedDifferenceInterval([true], [true, false])).toThrow(/^after: scores 2 problems but before scores 1/);
    expect(() => pairedDifferenceInterval([true], [false])).toThrow(/^before: needs at least 2 problems/);
  });
});
