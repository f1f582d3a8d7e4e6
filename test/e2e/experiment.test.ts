// End to end: `lightreasoner experiment` runs a tiny spec on the built-in pair through
// `lightreasoner run`'s code (both services as processes, the runs over gRPC), caches the
// round under its key, skips it when run again, and draws the table rows from the cache. The
// spec also asks for the SFT baseline stopped at LightReasoner's tuned tokens, which must end
// on that budget exactly, and for a second round of LightReasoner continuing the first.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { RunReport } from "#trainer/report/run-report.ts";
import { changeCell } from "#cli/experiment/cells.ts";

const cli = (args: string[]) => spawnSync(process.execPath, ["bin/lightreasoner.mjs", "experiment", ...args], { encoding: "utf8", timeout: 300_000 });

describe("lightreasoner experiment on the built-in pair", () => {
  const dir = mkdtempSync(join(tmpdir(), "lr-experiment-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const results = join(dir, "results");
  const spec = join(dir, "tiny.json");
  writeFileSync(
    spec,
    JSON.stringify({
      title: "tiny",
      order: 1,
      problems: { train: { seed: 2, split: "train" }, eval: { seed: 1, split: "validation" } },
      settings: { mode: "offline", sample: 24, sftSample: 24, eval: 40, steps: 4, sftSteps: 4, batchSize: 4, gradientAccumulation: 1, sft: false, sftMatched: ["tokens"], rounds: 2 },
      rows: [
        { id: "small", label: "a small round", seeds: [3] },
        { id: "small-2", label: "its second round", measure: "round-2", seeds: [3] },
      ],
    }),
  );

  it("runs a round once, caches it by its key, and draws its table row from the cache", () => {
    const first = cli([spec, "--results", results]);
    expect(first.status, `${first.stdout}\n${first.stderr}`).toBe(0);
    expect(first.stdout).toMatch(/tiny\/small seed 3: lightreasoner run --expert models\/expert .* --sample 24 --eval 40 --mode offline .* --rounds 2 --no-sft .*--sft-matched tokens --seed 3/);
    // The second row reads the same round.
    expect(first.stdout).toMatch(/tiny: 1 run, 1 cached, 0 not run/);

    const [runDir] = readdirSync(results).filter((name) => name !== "data");
    expect(runDir).toMatch(/^[0-9a-f]{16}$/);
    const record = JSON.parse(readFileSync(join(results, runDir, "experiment.json"), "utf8"));
    expect(record).toMatchObject({ spec: "tiny", row: "small", variant: 0, seed: 3 });
    expect(record.key.slice(0, 16)).toBe(runDir);
    expect(record.inputs.settings).toMatchObject({ sample: 24, eval: 40, seed: 3, alpha: 0.7, sftMatched: ["tokens"] });
    const report = JSON.parse(readFileSync(join(results, runDir, "report.json"), "utf8")) as RunReport;
    expect(report.evalProblems).toBe(40);
    expect(report.lightreasoner.optimizerSteps).toBe(4);
    expect(report.lightreasoner.tunedTokens).toBe(16);
    // The matched baseline stopped on LightReasoner's 16 tuned tokens exactly: one step, cut to fit.
    const matched = report.sftMatched!.tokens!;
    expect(matched.budget).toEqual({ tunedTokens: 16 });
    expect(matched.tunedTokens).toBe(16);
    expect(matched.optimizerSteps).toBe(1);
    expect(report.sftMatched!.time).toBeNull();
    expect(report.sft).toBeNull();
    const [lo, hi] = matched.lightreasonerMinusThisCi95;
    expect(lo).toBeLessThanOrEqual(report.lightreasoner.accuracyAfter - matched.accuracyAfter + 1e-12);
    expect(hi).toBeGreaterThanOrEqual(report.lightreasoner.accuracyAfter - matched.accuracyAfter - 1e-12);
    expect(report.lightreasoner.gainPer1000TunedTokens).toBeCloseTo(((100 * (report.lightreasoner.accuracyAfter - report.expert.accuracyBefore)) / 16) * 1000, 9);
    // Round 2 sampled with round 1's adapter and trained on from it: four more steps of 4 tokens.
    const [one, two] = report.rounds!;
    expect(one).toMatchObject({ round: 1, accuracyAfter: report.lightreasoner.accuracyAfter, tunedTokens: 16, cumulativeTunedTokens: 16 });
    expect(one.accuracyDeltaCi95).toEqual(report.lightreasoner.accuracyDeltaCi95);
    expect(two).toMatchObject({ round: 2, tunedTokens: 16, cumulativeTunedTokens: 32 });
    expect(two.changeFromPreviousCi95[0]).toBeLessThanOrEqual(two.accuracyAfter - one.accuracyAfter + 1e-12);
    expect(two.changeFromPreviousCi95[1]).toBeGreaterThanOrEqual(two.accuracyAfter - one.accuracyAfter - 1e-12);
    expect(report.published?.gsm8k[0]).toEqual({ expert: "Qwen2.5-Math-1.5B", base: 42.5, sft: 69.2, lightreasoner: 70.6 });

    // Again: found in the cache, nothing started.
    const again = cli([spec, "--results", results]);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).toContain(`tiny/small seed 3: cached in ${join(results, runDir)}`);
    expect(again.stdout).toContain(`tiny/small-2 seed 3: cached in ${join(results, runDir)}`);
    expect(again.stdout).not.toMatch(/inference service pid/);

    const table = cli([spec, "--results", results, "--table"]);
    expect(table.status, table.stderr).toBe(0);
    expect(table.stdout.trim().split("\n")).toEqual(["| experiment | change (points) | before these specs (README, scratch script) |", "|---|---|---|", `| a small round | ${changeCell(report, "lightreasoner")} |  |`, `| its second round | ${changeCell(report, "round-2")} |  |`]);
    // Two service processes and two runs over gRPC: about a minute, several on a machine shared with other jobs.
  }, 400_000);

  it("refuses a spec that reads the test split without being the frozen default", () => {
    const bad = join(dir, "peek.json");
    writeFileSync(bad, JSON.stringify({ title: "peek", order: 1, problems: { train: { seed: 2, split: "train" }, eval: { seed: 1, split: "test" } }, rows: [{ id: "a", label: "a", seeds: [0] }] }));
    const run = cli([bad, "--results", results]);
    expect(run.status).toBe(1);
    expect(run.stderr).toContain(`lightreasoner: ${bad}: problems.eval.split: the test split is read once, by the frozen default`);
  });
});
