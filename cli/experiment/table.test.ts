// The table's cells, hand-computed: points with one decimal, a true minus sign, each measure
// read from its part of the report.
import { describe, expect, it } from "vitest";
import type { MatchedSftResult, RunReport } from "#trainer/report/run-report.ts";
import { changeCell, points } from "./cells.ts";

const method = (accuracyAfter: number, ci: [number, number], gainPer1000TunedTokens = 0) => ({ accuracyAfter, accuracyDeltaCi95: ci, gainPer1000TunedTokens }) as unknown as MatchedSftResult;
const report = {
  expert: { accuracyBefore: 0.668 },
  // +0.8 points over 4,800 tokens and +3.6 over 141,751: 0.1667 and 0.0254 per 1,000.
  lightreasoner: method(0.676, [0.001, 0.014], 0.8 / 4.8),
  sft: method(0.704, [0.029, 0.044], 3.6 / 141.751),
  rounds: [
    { round: 1, accuracyAfter: 0.676, accuracyDeltaCi95: [0.001, 0.014] },
    { round: 2, accuracyAfter: 0.681, accuracyDeltaCi95: [0.005, 0.021] },
  ],
  sftMatched: { tokens: { ...method(0.671, [-0.004, 0.01]), lightreasonerMinusThisCi95: [-0.002, 0.012] }, time: null },
} as unknown as RunReport;

describe("experiment table cells", () => {
  it("writes points the README's way", () => {
    expect(points(0.016)).toBe("+1.6");
    expect(points(0)).toBe("+0.0");
    expect(points(-0.005)).toBe("−0.5");
    expect(points(-0.0004)).toBe("−0.0");
    expect(points(0.0215)).toBe("+2.2");
  });

  it("shows each measure's estimate and interval", () => {
    // 0.676 - 0.668 = +0.8 points
    expect(changeCell(report, "lightreasoner")).toBe("+0.8 (+0.1, +1.4)");
    // 0.704 - 0.668 = +3.6
    expect(changeCell(report, "sft")).toBe("+3.6 (+2.9, +4.4)");
    // 0.671 - 0.668 = +0.3
    expect(changeCell(report, "sft-at-tokens")).toBe("+0.3 (−0.4, +1.0)");
    // 0.676 - 0.671 = +0.5, LightReasoner's lead over the token-matched baseline
    expect(changeCell(report, "lead-at-tokens")).toBe("+0.5 (−0.2, +1.2)");
    expect(() => changeCell(report, "sft-at-time")).toThrow(/no sft-at-time/);
    // 0.681 - 0.668 = +1.3 after the second round; no third was run.
    expect(changeCell(report, "round-2")).toBe("+1.3 (+0.5, +2.1)");
    expect(() => changeCell(report, "round-3")).toThrow(/no round-3/);
    // 0.1667 / 0.0254 = 6.56
    expect(changeCell(report, "per-1k-tokens")).toBe("0.167 vs 0.0254 (6.56x)");
  });
});
