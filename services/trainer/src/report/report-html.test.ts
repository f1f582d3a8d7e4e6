import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { RunReport } from "./run-report.ts";
import { PUBLISHED_ANCHORS } from "./published.ts";
import { writeRunReport } from "./write-report.ts";

export function sampleReport(): RunReport {
  const method = {
    accuracyAfter: 0.46,
    accuracyAfterCi95: [0.43, 0.49] as [number, number],
    accuracyDeltaCi95: [0.02, 0.06] as [number, number],
    problemsSampled: 200,
    tunedTokens: 900,
    distinctTunedTokens: 600,
    optimizerSteps: 40,
    wallSeconds: 60,
    // (0.46 - 0.42) x 100 points / 900 tuned tokens x 1,000
    gainPer1000TunedTokens: 4.444,
    stageSeconds: { sampling: 20, training: 40 },
    loss: [
      { step: 1, loss: 1.2 },
      { step: 20, loss: 0.8 },
      { step: 40, loss: 0.6 },
    ],
  };
  return {
    createdAt: "2026-11-29T07:00:00Z",
    expert: { name: "expert <b>", fingerprint: "ab", accuracyBefore: 0.42, accuracyBeforeCi95: [0.39, 0.45], accuracyAfter: 0.46, accuracyAfterCi95: [0.43, 0.49], accuracyDeltaCi95: [0.02, 0.06] },
    amateur: { name: "amateur", accuracy: 0.12, accuracyCi95: [0.1, 0.14] },
    evalProblems: 1000,
    lightreasoner: { ...method, stepsSeen: 6000, stepsSelected: 900, adapterVersions: ["abc"] },
    sft: { ...method, accuracyAfter: 0.47, tunedTokens: 30000, wallSeconds: 400, trajectoriesKept: 90, gainPer1000TunedTokens: 0.1667 },
    sftMatched: {
      tokens: { ...method, accuracyAfter: 0.43, tunedTokens: 900, trajectoriesKept: 9, gainPer1000TunedTokens: 1.111, budget: { tunedTokens: 900 }, lightreasonerMinusThisCi95: [0.011, 0.049] },
      time: null,
    },
    rounds: [
      { round: 1, accuracyAfter: 0.46, accuracyAfterCi95: [0.43, 0.49], accuracyDeltaCi95: [0.02, 0.06], changeFromPreviousCi95: [0.02, 0.06], stepsSeen: 6000, stepsSelected: 900, tunedTokens: 900, cumulativeTunedTokens: 900, wallSeconds: 60 },
      { round: 2, accuracyAfter: 0.465, accuracyAfterCi95: [0.435, 0.495], accuracyDeltaCi95: [0.025, 0.065], changeFromPreviousCi95: [-0.01, 0.02], stepsSeen: 5900, stepsSelected: 850, tunedTokens: 850, cumulativeTunedTokens: 1750, wallSeconds: 58 },
    ],
    published: PUBLISHED_ANCHORS,
    settings: { beta: 0.4, alpha: 0.2 },
    tfjsBackend: "wasm",
    trainingEngine: "onnxruntime",
    klValues: [0.01, 0.2, 0.5, 1.3, 0.05, 0.45],
    examples: [{ question: "Tom has 3 < 4 apples?", correct: true, tokens: [{ text: "3 + 4", kl: 0.9, selected: true }, { text: " = 7", kl: 0.1, selected: false }] }],
  };
}

describe("run report", () => {
  it("writes report.json as given and a self-contained, escaped report.html", () => {
    const dir = mkdtempSync(join(tmpdir(), "lr-report-"));
    try {
      const report = sampleReport();
      const { json, html } = writeRunReport(dir, report);
      expect(JSON.parse(readFileSync(json, "utf8"))).toEqual(report);
      const page = readFileSync(html, "utf8");
      expect(page).not.toMatch(/<script|https?:\/\//);
      expect(page).toContain("expert &#60;b&#62;");
      expect(page).toContain("Tom has 3 &#60; 4 apples?");
      expect(page.match(/<svg/g)?.length).toBe(4); // accuracy, efficiency, KL histogram, loss
      expect(page).toContain('class="sel"');
      expect(page).toContain("β = 0.4");
      expect(page).toContain("training engine ONNX Runtime (adapter and optimizer on TensorFlow.js wasm)");
      // The SFT baseline matched to LightReasoner's tuned tokens, and each method's gain per 1,000 of them.
      expect(page).toContain("<th>SFT at LightReasoner&#39;s tuned tokens</th>");
      expect(page).not.toContain("SFT at LightReasoner&#39;s wall time");
      expect(page).toContain("<td>change per 1,000 tuned tokens (pts)</td><td>+4.44</td><td>+0.167</td><td>+1.11</td>");
      expect(page).toContain("<td>LightReasoner minus this, paired 95% CI</td><td></td><td></td><td>[+1.1, +4.9] pts</td>");
      // Round after round: each against the base expert and the round before.
      expect(page).toContain("<tr><td>2</td><td>46.5%</td><td>[+2.5, +6.5] pts</td><td>[-1.0, +2.0] pts</td><td>850 / 5900</td><td>1750</td><td>58.0</td></tr>");
      // The paper's figures, labelled as published, beside this run's.
      expect(page).toContain("<td>published: Qwen2.5-Math-1.5B, GSM8K</td><td>42.5%</td><td>69.2%</td><td>70.6%</td>");
      expect(page).toContain("<td>published: Qwen2.5-Math-1.5B, tuned tokens</td><td>1.77M</td><td>20K</td>");
      expect(page).toContain("<td><b>this run</b> (expert &#60;b&#62;, built-in task, measured here)</td><td>42.0%</td><td>47.0%</td><td>46.0%</td>");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
