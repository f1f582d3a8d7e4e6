// report.html: a single self-contained page (inline CSS and SVG, no scripts, no network)
// that shows a LightReasoner round the way a person wants to see it: did accuracy move, at
// what cost next to SFT, where the expert and the amateur disagreed, and how training went.
import type { ExampleTrajectory, RunReport } from "./run-report.ts";
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
  const rows: [string, string, string][] = [
    ["held-out greedy accuracy after", pct(lr.accuracyAfter), sft ? pct(sft.accuracyAfter) : "–"],
    ["change vs. expert before (95% CI)", interval(lr.accuracyDeltaCi95), sft ? interval(sft.accuracyDeltaCi95) : "–"],
    ["problems sampled", String(lr.problemsSampled), sft ? String(sft.problemsSampled) : "–"],
    ["tuned tokens (with repeats)", String(lr.tunedTokens), sft ? String(sft.tunedTokens) : "–"],
    ["distinct tokens tuned", String(lr.distinctTunedTokens), sft ? String(sft.distinctTunedTokens) : "–"],
    ["optimizer steps", String(lr.optimizerSteps), sft ? String(sft.optimizerSteps) : "–"],
    ["wall time (s)", lr.wallSeconds.toFixed(1), sft ? sft.wallSeconds.toFixed(1) : "–"],
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
<p class="sub">${escapeHtml(r.createdAt)} · expert <b>${escapeHtml(r.expert.name)}</b>, amateur <b>${escapeHtml(r.amateur.name)}</b> · ${r.evalProblems} held-out problems · TensorFlow.js backend ${escapeHtml(r.tfjsBackend)}</p>
<div class="grid2">
<section><h2>Held-out greedy accuracy (95% intervals)</h2>${barChart(accuracyBars, "accuracy", 1)}</section>
<section><h2>LightReasoner beside SFT</h2><table><tr><th></th><th>LightReasoner</th><th>SFT</th></tr>${rows.map((row) => `<tr><td>${row[0]}</td><td>${row[1]}</td><td>${row[2]}</td></tr>`).join("")}</table>${efficiency}</section>
</div>
<div class="grid2">
<section><h2>KL(expert ‖ amateur) per step</h2>${histogram(r.klValues, { at: beta, label: `β = ${beta}` }, "KL (nats)")}
<p>${lr.stepsSelected} of ${lr.stepsSeen} steps (${pct(lr.stepsSelected / Math.max(lr.stepsSeen, 1))}) are above β and become training samples.</p></section>
<section><h2>Training loss</h2>${loss}</section>
</div>
<h2>Trajectories, each token shaded by KL</h2>
<p class="legend"><span style="background:rgba(217,83,79,.1)">low KL</span><span style="background:rgba(217,83,79,.85)">KL ≥ ${(klScale).toFixed(2)}</span><span class="sel" style="outline:2px solid #b52a25">selected step</span></p>
${r.examples.map((e) => trajectoryBlock(e, klScale)).join("")}
<h2>Settings</h2><table>${Object.entries(r.settings).map(([k, v]) => `<tr><td>${escapeHtml(k)}</td><td>${escapeHtml(String(v))}</td></tr>`).join("")}</table>
</body></html>
`;
}
