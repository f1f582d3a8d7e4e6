// One cell of the table of experiments: what a row measures of a round's report (a change in
// accuracy, after one round of LightReasoner or more, or LightReasoner's lead over a matched baseline) with its paired 95% interval,
// written in points the way the README writes them.
import type { RunReport } from "#trainer/report/run-report.ts";
import type { Measure } from "./spec.ts";

/** Points with one decimal and a sign, the README's way: +1.6, −0.5 (a true minus sign), +0.0. */
export function points(fraction: number): string {
  const rounded = (Math.round(fraction * 1000) / 10).toFixed(1);
  return fraction < 0 ? `−${rounded.replace("-", "")}` : `+${rounded}`;
}

/** "+1.6 (+1.0, +2.2)": what `measure` names (a change in accuracy, or LightReasoner's lead) and its paired 95% interval, in points. */
export function changeCell(report: RunReport, measure: Measure): string {
  const before = report.expert.accuracyBefore;
  const cell = (estimate: number, [lower, upper]: [number, number]) => `${points(estimate)} (${points(lower)}, ${points(upper)})`;
  const missing = (what: string) => new Error(`the report has no ${what} (a round run without it)`);
  switch (measure) {
    case "lightreasoner":
      return cell(report.lightreasoner.accuracyAfter - before, report.lightreasoner.accuracyDeltaCi95);
    case "sft":
      if (!report.sft) throw missing("SFT baseline");
      return cell(report.sft.accuracyAfter - before, report.sft.accuracyDeltaCi95);
    case "sft-at-tokens":
    case "sft-at-time": {
      const m = measure === "sft-at-tokens" ? report.sftMatched?.tokens : report.sftMatched?.time;
      if (!m) throw missing(measure);
      return cell(m.accuracyAfter - before, m.accuracyDeltaCi95);
    }
    case "round-2":
    case "round-3": {
      const round = report.rounds?.find((k) => k.round === Number(measure.slice("round-".length)));
      if (!round) throw missing(measure);
      return cell(round.accuracyAfter - before, round.accuracyDeltaCi95);
    }
    case "per-1k-tokens": {
      if (!report.sft) throw missing("SFT baseline");
      const lr = report.lightreasoner.gainPer1000TunedTokens;
      const sft = report.sft.gainPer1000TunedTokens;
      return `${lr.toFixed(3)} vs ${sft.toFixed(4)} (${sft > 0 ? `${(lr / sft).toPrecision(3)}x` : "SFT gained nothing"})`;
    }
    case "lead-at-tokens": {
      const m = report.sftMatched?.tokens;
      if (!m) throw missing("sft-at-tokens");
      return cell(report.lightreasoner.accuracyAfter - m.accuracyAfter, m.lightreasonerMinusThisCi95);
    }
  }
}
