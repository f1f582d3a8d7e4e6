// The table `lightreasoner run` prints at the end: accuracy before and after with intervals,
// LightReasoner beside the SFT baseline, and what each cost.
import type { RunReport } from "#trainer/report/run-report.ts";
import { trainingEngineText } from "#trainer/report/run-report.ts";

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
const pts = (x: number) => `${x >= 0 ? "+" : ""}${(100 * x).toFixed(1)}`;
const ci = ([lo, hi]: [number, number]) => `[${pct(lo)}, ${pct(hi)}]`;
const change = ([lo, hi]: [number, number], after: number, before: number) => `${pts(after - before)} pts [${pts(lo)}, ${pts(hi)}]`;

export function summaryRows(r: RunReport): string[][] {
  const lr = r.lightreasoner;
  const sft = r.sft;
  const dash = "–";
  return [
    ["", "LightReasoner", "SFT baseline"],
    [`expert accuracy before (${r.evalProblems} problems)`, `${pct(r.expert.accuracyBefore)} ${ci(r.expert.accuracyBeforeCi95)}`, sft ? "same" : dash],
    ["expert accuracy after", `${pct(lr.accuracyAfter)} ${ci(lr.accuracyAfterCi95)}`, sft ? `${pct(sft.accuracyAfter)} ${ci(sft.accuracyAfterCi95)}` : dash],
    ["change, paired 95% CI", change(lr.accuracyDeltaCi95, lr.accuracyAfter, r.expert.accuracyBefore), sft ? change(sft.accuracyDeltaCi95, sft.accuracyAfter, r.expert.accuracyBefore) : dash],
    ["problems sampled", String(lr.problemsSampled), sft ? String(sft.problemsSampled) : dash],
    ["steps seen / selected", `${lr.stepsSeen} / ${lr.stepsSelected} (${pct(lr.stepsSelected / Math.max(lr.stepsSeen, 1))})`, sft ? `${sft.trajectoriesKept} trajectories kept` : dash],
    ["tuned tokens (with repeats)", String(lr.tunedTokens), sft ? `${sft.tunedTokens} (LR: ${pct(lr.tunedTokens / Math.max(sft.tunedTokens, 1))})` : dash],
    ["distinct tokens tuned", String(lr.distinctTunedTokens), sft ? `${sft.distinctTunedTokens} (LR: ${pct(lr.distinctTunedTokens / Math.max(sft.distinctTunedTokens, 1))})` : dash],
    ["optimizer steps", String(lr.optimizerSteps), sft ? String(sft.optimizerSteps) : dash],
    ["sampling + training wall time", `${lr.wallSeconds.toFixed(1)} s`, sft ? `${sft.wallSeconds.toFixed(1)} s` : dash],
    ["change per 1,000 tuned tokens", perThousand(lr.gainPer1000TunedTokens), sft ? perThousand(sft.gainPer1000TunedTokens) : dash],
    ...matchedRows(r),
    ...roundRows(r),
    [`amateur accuracy`, `${pct(r.amateur.accuracy)} ${ci(r.amateur.accuracyCi95)}`, ""],
    ["training engine", trainingEngineText(r), ""],
  ];
}

const perThousand = (x: number) => `${x >= 0 ? "+" : ""}${x.toPrecision(3)} pts`;

/** The SFT baselines stopped at LightReasoner's budget: their change, and LightReasoner's lead over them on the same problems. */
function matchedRows(r: RunReport): string[][] {
  const rows: string[][] = [];
  for (const m of [r.sftMatched?.tokens, r.sftMatched?.time]) {
    if (!m) continue;
    const budget = "tunedTokens" in m.budget ? `${m.budget.tunedTokens} tuned tokens` : `${m.budget.wallSeconds.toFixed(1)} s`;
    const lead = m.lightreasonerMinusThisCi95;
    rows.push([
      `SFT stopped at LightReasoner's ${budget}`,
      `LR minus it: [${pts(lead[0])}, ${pts(lead[1])}] pts`,
      `${change(m.accuracyDeltaCi95, m.accuracyAfter, r.expert.accuracyBefore)}, ${m.tunedTokens} tokens, ${perThousand(m.gainPer1000TunedTokens)}/1k`,
    ]);
  }
  return rows;
}

/** LightReasoner's rounds after the first: each one's change from the base expert and from the round before. */
function roundRows(r: RunReport): string[][] {
  return (r.rounds ?? []).filter((k) => k.round > 1).map((k) => [
    `LightReasoner round ${k.round}`,
    change(k.accuracyDeltaCi95, k.accuracyAfter, r.expert.accuracyBefore),
    `vs round ${k.round - 1}: [${pts(k.changeFromPreviousCi95[0])}, ${pts(k.changeFromPreviousCi95[1])}] pts, ${k.cumulativeTunedTokens} tokens in all`,
  ]);
}

export function printSummary(r: RunReport): void {
  const rows = summaryRows(r);
  const widths = rows[0].map((_, col) => Math.max(...rows.map((row) => row[col].length)));
  console.log("");
  for (const [i, row] of rows.entries()) {
    console.log(row.map((cell, col) => (col === 0 ? cell.padEnd(widths[col]) : cell.padStart(widths[col]))).join("   "));
    if (i === 0) console.log(widths.map((w) => "-".repeat(w)).join("   "));
  }
}
