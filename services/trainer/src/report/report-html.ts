// report.html: a single self-contained page (inline CSS and SVG, no scripts, no network)
// that shows a LightReasoner round the way a person wants to see it: did accuracy move, at
// what cost next to SFT, where the expert and the amateur disagreed, and how training went.
import type { ExampleTrajectory, MatchedSftResult, MethodResult, RunReport } from "./run-report.ts";
import { trainingEngineText } from "./run-report.ts";
import { barChart, escapeHtml, histogram, lineChart } from "./svg.ts";

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
const signedPct = (x: number) => `${x >= 0 ? "+" : ""}${(100 * x).toFixed(1)}`;
const interval = ([lo, hi]: [number, number]) => `[${signedPct(lo)}, ${signedPct(hi)}] pts`;

const STYLE = `
body{font:14px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:1180px;color:#1d232a;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #dde;padding-bottom:.2rem}
.sub{color:#667;margin-top:0} .grid2{display:grid;grid-template-columns:1fr 1fr;gap:1.5rem}
table{border-collapse:collapse} td,th{padding:.25rem .8rem;border-bottom:1px solid #eef;text-align:right} th:first-child,td:first-child{text-align:left}
.chart{width:100%;height:auto;font-size:11px} .chart .axis{stroke:#445} .chart .grid{stroke:#eef} .chart .whisker{stroke:#222;stroke-width:1.5}
.chart .series{fill:none;stroke-width:1.8} .chart .kept{fill:#d9534f} .chart .dropped{fill:#9fb3c8} .chart .marker{stroke:#222;stroke-dasharray:4 3}
.chart .value{font-weight:600}
.traj{font-family:ui-monospace,monospace;white-space:pre-wrap;line-height:1.9;border:1px solid #eef;padding:.6rem;border-radius:6px;margin:.6rem 0}
.traj span{border-radius:3px} .traj .sel{outline:2px solid #b52a25;outline-offset:-1px}
.q{color:#445;margin:.8rem 0 .2rem} .ok{color:#2a7a2a} .bad{color:#b52a25}
.legend span{display:inline-block;padding:0 .4rem;margin-right:.4rem;border-radius:3px}
`;

function tokenSpan(t: { text: string; kl: number; selected: boolean }, klScale: number): string {
  const strength = Math.min(1, t.kl / klScale);
  const style = `background:rgba(217,83,79,${(0.85 * strength).toFixed(3)})`;
  return `<span style="${style}"${t.selected ? ' class="sel"' : ""} title="KL ${t.kl.toFixed(3)}${t.selected ? " (selected)" : ""}">${escapeHtml(t.text)}</span>`;
}

function trajectoryBlock(example: ExampleTrajectory, klScale: number): string {
  const verdict = example.correct === null ? "" : example.correct ? ' <span class="ok">correct</span>' : ' <span class="bad">wrong</span>';
  return `<div class="q">${escapeHtml(example.question)}${verdict}</div><div class="traj">${example.tokens.map((t) => tokenSpan(t, klScale)).join("")}</div>`;
}

export function renderReportHtml(r: RunReport): string {
  const beta = Number(r.settings.beta);
  const lr = r.lightreasoner;
  const sft = r.sft;
  const accuracyBars = [
    { label: "amateur", value: r.amateur.accuracy, interval: r.amateur.accuracyCi95, color: "#9fb3c8" },
    { label: "expert before", value: r.expert.accuracyBefore, interval: r.expert.accuracyBeforeCi95, color: "#6c8ebf" },
    { label: "+ LightReasoner", value: r.expert.accuracyAfter, interval: r.expert.accuracyAfterCi95, color: "#d9534f" },
    ...(sft ? [{ label: "+ SFT", value: sft.accuracyAfter, interval: sft.accuracyAfterCi95, color: "#8a6d3b" }] : []),
  ];
  const klScale = Math.max(beta * 2, 1e-6);
  // Columns: LightReasoner, full SFT, and the SFT baselines stopped at LightReasoner's tuned tokens and wall time where they ran.
  const matched = [r.sftMatched?.tokens, r.sftMatched?.time].filter((m): m is MatchedSftResult => Boolean(m));
  const columns: { title: string; result: MethodResult | null }[] = [
    { title: "LightReasoner", result: lr },
    { title: "SFT", result: sft },
    ...matched.map((m) => ({ title: "tunedTokens" in m.budget ? "SFT at LightReasoner's tuned tokens" : "SFT at LightReasoner's wall time", result: m })),
  ];
  const row = (label: string, cell: (m: MethodResult) => string): string[] => [label, ...columns.map((c) => (c.result ? cell(c.result) : "–"))];
  const rows: string[][] = [
    row("held-out greedy accuracy after", (m) => pct(m.accuracyAfter)),
    row("change vs. expert before (95% CI)", (m) => interval(m.accuracyDeltaCi95)),
    row("change per 1,000 tuned tokens (pts)", (m) => `${m.gainPer1000TunedTokens >= 0 ? "+" : ""}${m.gainPer1000TunedTokens.toPrecision(3)}`),
    row("problems sampled", (m) => String(m.problemsSampled)),
    row("tuned tokens (with repeats)", (m) => String(m.tunedTokens)),
    row("distinct tokens tuned", (m) => String(m.distinctTunedTokens)),
    row("optimizer steps", (m) => String(m.optimizerSteps)),
    row("wall time (s)", (m) => m.wallSeconds.toFixed(1)),
    ...(matched.length > 0 ? [["LightReasoner minus this, paired 95% CI", "", "", ...matched.map((m) => interval(m.lightreasonerMinusThisCi95))]] : []),
  ];
  const efficiency = sft
    ? barChart(
        [
          { label: "LR tokens", value: lr.tunedTokens / Math.max(sft.tunedTokens, 1), color: "#d9534f" },
          { label: "SFT tokens", value: 1, color: "#8a6d3b" },
          { label: "LR time", value: lr.wallSeconds / Math.max(sft.wallSeconds, 1e-9), color: "#d9534f" },
          { label: "SFT time", value: 1, color: "#8a6d3b" },
        ],
        "fraction of SFT",
        1.15,
      )
    : `<p class="empty">no SFT baseline in this run</p>`;
  const loss = lineChart(
    [
      { label: "LightReasoner (KL to soft label)", color: "#d9534f", points: lr.loss.map((p) => ({ x: p.step, y: p.loss })) },
      ...(sft ? [{ label: "SFT (cross-entropy)", color: "#8a6d3b", points: sft.loss.map((p) => ({ x: p.step, y: p.loss })) }] : []),
    ],
    "optimizer step",
    "loss",
  );
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>LightReasoner report</title><style>${STYLE}</style></head><body>
<h1>LightReasoner round</h1>
<p class="sub">${escapeHtml(r.createdAt)} · expert <b>${escapeHtml(r.expert.name)}</b>, amateur <b>${escapeHtml(r.amateur.name)}</b> · ${r.evalProblems} held-out problems · training engine ${escapeHtml(trainingEngineText(r))}</p>
<div class="grid2">
<section><h2>Held-out greedy accuracy (95% intervals)</h2>${barChart(accuracyBars, "accuracy", 1)}</section>
<section><h2>LightReasoner beside SFT</h2><table><tr><th></th>${columns.map((c) => `<th>${escapeHtml(c.title)}</th>`).join("")}</tr>${rows.map((cells) => `<tr>${cells.map((cell) => `<td>${cell}</td>`).join("")}</tr>`).join("")}</table>${efficiency}</section>
</div>
<div class="grid2">
<section><h2>KL(expert ‖ amateur) per step</h2>${histogram(r.klValues, { at: beta, label: `β = ${beta}` }, "KL (nats)")}
<p>${lr.stepsSelected} of ${lr.stepsSeen} steps (${pct(lr.stepsSelected / Math.max(lr.stepsSeen, 1))}) are above β and become training samples.</p></section>
<section><h2>Training loss</h2>${loss}</section>
</div>
<h2>Trajectories, each token shaded by KL</h2>
<p class="legend"><span style="background:rgba(217,83,79,.1)">low KL</span><span style="background:rgba(217,83,79,.85)">KL ≥ ${(klScale).toFixed(2)}</span><span class="sel" style="outline:2px solid #b52a25">selected step</span></p>
${r.examples.map((e) => trajectoryBlock(e, klScale)).join("")}
${roundsSection(r)}
${publishedSection(r)}
<h2>Settings</h2><table>${Object.entries(r.settings).map(([k, v]) => `<tr><td>${escapeHtml(k)}</td><td>${escapeHtml(String(v))}</td></tr>`).join("")}</table>
</body></html>
`;
}

/** LightReasoner round after round (lightreasoner run --rounds): each round's accuracy, against the base expert and the round before. */
function roundsSection(r: RunReport): string {
  if (!r.rounds) return "";
  const rows = r.rounds
    .map((k) => `<tr><td>${k.round}</td><td>${pct(k.accuracyAfter)}</td><td>${interval(k.accuracyDeltaCi95)}</td><td>${interval(k.changeFromPreviousCi95)}</td><td>${k.stepsSelected} / ${k.stepsSeen}</td><td>${k.cumulativeTunedTokens}</td><td>${k.wallSeconds.toFixed(1)}</td></tr>`)
    .join("");
  const sft = r.sft ? `<p>Full SFT on the same held-out problems: ${pct(r.sft.accuracyAfter)}.</p>` : "";
  return `<h2>Rounds</h2>
<p class="sub">Each round samples with the previous round's adapter, selects steps again and trains on from it.</p>
<table><tr><th>round</th><th>accuracy after</th><th>change vs. expert before (95% CI)</th><th>change vs. the round before (95% CI)</th><th>steps selected / seen</th><th>tuned tokens, all rounds</th><th>wall time (s)</th></tr>${rows}</table>${sft}`;
}

/** The paper's figures beside this run's, labelled as published: the scale and direction of the effect at a glance. */
function publishedSection(r: RunReport): string {
  const p = r.published;
  if (!p) return "";
  const ours = `<tr><td><b>this run</b> (${escapeHtml(r.expert.name)}, built-in task, measured here)</td><td>${pct(r.expert.accuracyBefore)}</td><td>${r.sft ? pct(r.sft.accuracyAfter) : "–"}</td><td>${pct(r.lightreasoner.accuracyAfter)}</td></tr>`;
  const theirs = p.gsm8k.map((a) => `<tr><td>published: ${escapeHtml(a.expert)}, GSM8K</td><td>${a.base.toFixed(1)}%</td><td>${a.sft.toFixed(1)}%</td><td>${a.lightreasoner.toFixed(1)}%</td></tr>`).join("");
  const cost = r.sft ? `<tr><td><b>this run</b>: tuned tokens / wall time</td><td>${r.sft.tunedTokens} / ${r.sft.wallSeconds.toFixed(1)} s</td><td>${r.lightreasoner.tunedTokens} / ${r.lightreasoner.wallSeconds.toFixed(1)} s</td></tr>` : "";
  const efficiency = p.efficiency.map((e) => `<tr><td>published: ${escapeHtml(e.expert)}, ${escapeHtml(e.measure)}</td><td>${escapeHtml(e.sft)}</td><td>${escapeHtml(e.lightreasoner)}</td></tr>`).join("");
  return `<h2>Beside the published figures</h2>
<p class="sub">Rows marked <b>published</b> are the paper's (${escapeHtml(p.source)}), copied, not measured here; they are for scale and direction only: other models, another task.</p>
<div class="grid2"><table><tr><th>greedy accuracy</th><th>expert</th><th>+ SFT</th><th>+ LightReasoner</th></tr>${ours}${theirs}</table>
<table><tr><th>cost</th><th>SFT</th><th>LightReasoner</th></tr>${cost}${efficiency}</table></div>`;
}
