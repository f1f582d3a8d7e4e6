// What the benchmark feeds the models and how it derives figures across sections: random
// prompts stay clear of special tokens, the synthetic LoRA samples are valid trajectories
// with soft labels, and the fraction of the ceiling takes the service's best cell.
import { describe, expect, it } from "vitest";
import { measured } from "#bench/stats.ts";
import { ceilingFractions } from "#bench/run-bench.ts";
import type { LimitsResult } from "#bench/limits.ts";
import type { SamplingResult } from "#bench/sampling.ts";
import { syntheticSelectedSteps } from "#bench/training.ts";
import { randomPrompts } from "#bench/workloads.ts";
import { checkTrajectory } from "#trainer/training/trajectory.ts";

describe("benchmark inputs", () => {
  it("random prompts: seeded, of the asked length, never a special token", () => {
    const a = randomPrompts(151_936, 4, 16, 17);
    expect(a).toEqual(randomPrompts(151_936, 4, 16, 17));
    expect(a).not.toEqual(randomPrompts(151_936, 4, 16, 18));
    expect(a.every((p) => p.length === 16 && p.every((id) => Number.isInteger(id) && id >= 256 && id < 151_936))).toBe(true);
    // A small vocabulary keeps its lower half for special and byte tokens.
    expect(randomPrompts(105, 3, 8, 1).flat().every((id) => id >= 52 && id < 105)).toBe(true);
  });

  it("synthetic selected steps are valid trajectories with soft labels on the completion only", () => {
    const sequences = Array.from({ length: 20 }, (_, i) => ({ tokenIds: Array.from({ length: 40 }, (_, j) => (i * 7 + j * 3) % 100), promptLength: 10, targets: [] }));
    const trajectories = syntheticSelectedSteps(sequences, 100, 9);
    let targets = 0;
    trajectories.forEach((t, i) => {
      checkTrajectory(t, 100, `trajectories[${i}]`);
      for (const target of t.targets) {
        expect(target.position).toBeGreaterThan(t.promptLength);
        expect(target.ids[0]).toBe(t.tokenIds[target.position]);
      }
      targets += t.targets.length;
    });
    // About one completion position in seven: 20 x 29 positions -> around 87.
    expect(targets).toBeGreaterThan(50);
    expect(targets).toBeLessThan(130);
  });
});

describe("fraction of the ceiling", () => {
  const cell = (streams: number, tps: number, decode: number) => ({
    streams,
    tokens: 1,
    tokensPerSecond: measured([tps], "tokens/s"),
    decodeTokensPerSecond: measured([decode], "tokens/s"),
    firstTokenSeconds: measured([1], "s"),
    memory: { peakRssBytes: 1, rssBytes: 1, fileRssBytes: 0 },
    meanExpertBatch: streams,
  });
  const limits = { pairs: [{ pair: "p", ceilingTokensPerSecond: 200 }] } as unknown as LimitsResult;

  it("holds the service's best cell, and its best decode rate, against the pair's ceiling", () => {
    const sampling = { pairs: [{ workload: { name: "p" }, service: { cells: [cell(1, 10, 12), cell(16, 50, 40), cell(64, 30, 80)] } }] } as unknown as SamplingResult;
    expect(ceilingFractions(limits, sampling)).toEqual([
      { pair: "p", ceilingTokensPerSecond: 200, bestServiceTokensPerSecond: 50, bestServiceStreams: 16, fraction: 0.25, bestDecodeTokensPerSecond: 80, decodeFraction: 0.4 },
    ]);
  });

  it("is left out for a pair the service did not run, or without the limits section", () => {
    const sampling = { pairs: [{ workload: { name: "p" }, service: null }] } as unknown as SamplingResult;
    expect(ceilingFractions(limits, sampling)).toEqual([]);
    expect(ceilingFractions(undefined, sampling)).toEqual([]);
  });
});
