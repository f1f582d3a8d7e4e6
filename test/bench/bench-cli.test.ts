// `lightreasoner bench` as a user runs it, on its cheapest sections: it prints the table,
// writes bench.json with every figure as a median over repeats, and refuses an unknown
// section by name.
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { BenchReport } from "#bench/run-bench.ts";
import type { Measured } from "#bench/stats.ts";

function cli(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ["bin/lightreasoner.mjs", ...args], { encoding: "utf8", timeout: 110_000 }, (err, stdout, stderr) => {
      resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

function expectMeasured(m: Measured, unit: string): void {
  expect(m.unit).toBe(unit);
  expect(m.repeats.length).toBeGreaterThanOrEqual(3);
  expect(m.repeats.every((v) => Number.isFinite(v) && v > 0)).toBe(true);
  expect(m.min).toBe(Math.min(...m.repeats));
  expect(m.max).toBe(Math.max(...m.repeats));
  expect(m.median).toBeGreaterThanOrEqual(m.min);
  expect(m.median).toBeLessThanOrEqual(m.max);
}

describe("lightreasoner bench", () => {
  const dir = mkdtempSync(join(tmpdir(), "lr-bench-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("--quick --only step,limits: a table on stdout and bench.json with medians over repeats", async () => {
    const out = join(dir, "bench.json");
    const run = await cli("bench", "--quick", "--only", "step,limits", "--out", out);
    expect(run.status, run.stderr).toBe(0);
    const report = JSON.parse(readFileSync(out, "utf8")) as BenchReport;
    expect(report.format).toBe("lightreasoner-bench-v1");
    expect(report.quick).toBe(true);
    expect(report.sections).toEqual(["step", "limits"]);
    expect(Object.keys(report.sectionSeconds).sort()).toEqual(["limits", "step"]);
    expect(report.machine.cores).toBeGreaterThan(0);
    expect(report.sampling).toBeUndefined();

    const step = report.step!;
    expect(step.vocabSize).toBe(151_936);
    for (const m of [step.logSoftmaxMs, step.summaryInPassesMs, step.summarySinglePassMs]) expectMeasured(m, "ms");
    expect(step.speedup).toBeCloseTo(step.summaryInPassesMs.median / step.summarySinglePassMs.median, 10);
    // The server's ONNX Runtime summary raced against the JavaScript one at three batch sizes.
    expect(step.native.map((n) => n.rows)).toEqual([1, 16, 64]);
    for (const n of step.native) {
      for (const m of [n.javascriptMs, n.javascriptCpuMs, n.nativeMs, n.nativeCpuMs]) expectMeasured(m, "ms");
      expect(n.speedup).toBeCloseTo(n.javascriptMs.median / n.nativeMs.median, 10);
    }
    expectMeasured(step.float16.nativeMs, "ms");

    const limits = report.limits!;
    expect(limits.matmul.length).toBeGreaterThan(0);
    for (const rate of limits.matmul) expectMeasured(rate.gflops, "GFLOP/s");
    // The ceiling is the best rate any library reached in this run; the peers are measured or say why not.
    const peerRates = limits.peers.flatMap((p) => (p.available ? p.matmul.map((r) => r.gflops.median) : []));
    expect(limits.onnxruntimePeakGflops).toBe(Math.max(...limits.matmul.map((r) => r.gflops.median)));
    expect(limits.peakGflops).toBe(Math.max(limits.onnxruntimePeakGflops, ...peerRates));
    expect(limits.peers.map((p) => p.library)).toEqual(["torch", "numpy"]);
    for (const peer of limits.peers) {
      if (peer.available) {
        expect(peer.matmul.map((r) => [r.m, r.k, r.n])).toEqual(limits.matmul.map((r) => [r.m, r.k, r.n]));
        for (const rate of peer.matmul) expectMeasured(rate.gflops, "GFLOP/s");
        expect(peer.blas).not.toBe("none loaded");
        expectMeasured(peer.memoryRead!, "GB/s");
      } else {
        expect(peer.matmul).toEqual([]);
        expect(peer.memoryRead).toBeNull();
        expect(peer.install).toMatch(/apt-get install/);
      }
    }
    // The read peak is the best memory-read rate of the run, over an array larger than any cache.
    expectMeasured(limits.memoryRead, "GB/s");
    expect(limits.readBytes).toBe(256 * 2 ** 20);
    const peerReads = limits.peers.flatMap((p) => (p.memoryRead ? [p.memoryRead.median] : []));
    expect(limits.peakReadGBs).toBe(Math.max(limits.memoryRead.median, ...peerReads));
    expect(run.stdout).toMatch(/Memory read .*\(GB\/s, a 256 MiB float32 array summed\): ONNX Runtime [\d.]+/);
    expect(limits.cpuModel).toBe(report.machine.cpuModel);
    expect(limits.pairs.map((p) => p.pair)).toEqual(["built-in", "qwen2.5-0.5b-shape"]);
    for (const p of limits.pairs) {
      expect(p.flopsPerToken).toBe(p.expert.total + p.amateur.total);
      expect(p.ceilingTokensPerSecond).toBeCloseTo((limits.peakGflops * 1e9) / p.flopsPerToken, 6);
    }
    // Without the sampling section there is nothing to hold against the ceiling.
    expect(report.derived.ceilingFractions).toEqual([]);

    expect(run.stdout).toContain(`Per-step distribution work on ${report.machine.cpuModel} at vocabulary 151,936`);
    expect(run.stdout).toContain("SPARSE summary per stream-step, JavaScript one pass against the server's ONNX Runtime graph");
    expect(run.stdout).toMatch(/SPARSE summary in JavaScript, one pass\s+\S.*x faster/);
    expect(run.stdout).toContain(`Limit: float32 MatMul on ${report.machine.cpuModel} (GFLOP/s), ONNX Runtime beside PyTorch and numpy in this run`);
    expect(run.stdout).toMatch(/Ceiling = \S+ GFLOP\/s \((ONNX Runtime|PyTorch|numpy) at /);
    expect(run.stdout).toContain(`wrote ${out}`);
  });

  it("refuses an unknown section with the known ones", async () => {
    const run = await cli("bench", "--only", "sampling,speed", "--out", join(dir, "never.json"));
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/--only: unknown section "speed"; choose from step, limits, amateur, decode, adapters, transport, sampling, training, scale, memory/);
  });
});
