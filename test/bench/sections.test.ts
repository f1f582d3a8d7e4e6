// The new benchmark sections' arithmetic, with hand-computed expectations: the positions the
// amateur runs over each way, where a transport step's time goes, the end-to-end fraction
// of the ceiling, the best MatMul across libraries, what a loaded BLAS is, and the logits
// comparison behind the decode race, and the share of CPU time the host stole.
import { describe, expect, it } from "vitest";
import { rowAdapters } from "#bench/adapters.ts";
import { amateurPositions } from "#bench/amateur.ts";
import type { AmateurResult } from "#bench/amateur.ts";
import { compareLogProbs } from "#bench/decode.ts";
import type { LimitsResult, MatmulRate, PeerMatmul } from "#bench/limits.ts";
import { blasKind, peakOf, peakReadOf } from "#bench/limits.ts";
import { endToEndCeilings } from "#bench/run-bench.ts";
import { BenchInputError, measured } from "#bench/stats.ts";
import { breakdown, msPerStep } from "#bench/transport.ts";
import { cpuTimes, stolenShare } from "#bench/machine.ts";
import { liveThreadsCpuSeconds, processCpuSeconds } from "#bench/processes.ts";

describe("amateur positions per trajectory", () => {
  it("lockstep: the prompt once, then one per step; re-encoding: the whole prefix every step", () => {
    // 64-token prompt, 128 new tokens: 64 + 127 = 191; 128 x 64 + (0 + 1 + ... + 127) = 8,192 + 8,128.
    expect(amateurPositions(64, 128)).toEqual({ lockstep: 191, reencode: 16_320, ratio: 16_320 / 191 });
    expect(amateurPositions(64, 128).ratio).toBeCloseTo(85.45, 2);
    // One new token: both ways run the prompt once.
    expect(amateurPositions(5, 1)).toEqual({ lockstep: 5, reencode: 5, ratio: 1 });
    // 2-token prompt, 3 new tokens: 2 + 3 + 4 = 9 against 2 + 1 + 1 = 4.
    expect(amateurPositions(2, 3)).toEqual({ lockstep: 4, reencode: 9, ratio: 2.25 });
  });

  it("refuses lengths that are not positive integers, naming the field", () => {
    expect(() => amateurPositions(0, 128)).toThrow(BenchInputError);
    expect(() => amateurPositions(64, 1.5)).toThrow(/newTokens: must be a positive integer, got 1.5/);
  });
});

describe("transport breakdown", () => {
  it("is the per-step time each layer adds, from the rates", () => {
    // At the wide window: 1 ms per step over TCP, 1.25 ms plain HTTP/2, 2 ms bytes-only gRPC, 2.5 ms through the adapter; 5 ms at grpc-js's window.
    expect(breakdown(msPerStep({ tcp: 1000, http2Wide: 800, rawGrpcWide: 500, grpcWide: 400, grpc: 200 }))).toEqual({ tcpMs: 1, http2Ms: 0.25, grpcJsMs: 0.75, protobufMs: 0.5, clientMs: 2.5, defaultWindowMs: 2.5 });
  });

  it("takes CPU milliseconds per step as they are", () => {
    expect(breakdown({ tcp: 0.5, http2Wide: 0.75, rawGrpcWide: 1.5, grpcWide: 2, grpc: 2.25 })).toEqual({ tcpMs: 0.5, http2Ms: 0.25, grpcJsMs: 0.75, protobufMs: 0.5, clientMs: 2, defaultWindowMs: 0.25 });
  });

  it("shows a layer faster than noise as a negative difference rather than hiding it", () => {
    expect(breakdown(msPerStep({ tcp: 1000, http2Wide: 500, rawGrpcWide: 500, grpcWide: 500, grpc: 1000 })).defaultWindowMs).toBe(-1);
  });
});

describe("end to end against the ceiling", () => {
  const flops = { linear: 0, lmHead: 0, attention: 0, total: 0 };
  const amateur = {
    pairs: [
      { pair: { name: "p" }, endToEnd: { streams: 64, newTokens: 128, flopsPerToken: 2e9, tokensPerSecond: measured([20, 25, 30], "tokens/s"), decodeTokensPerSecond: measured([40], "tokens/s"), expert: flops, amateur: flops } },
      { pair: { name: "q" }, endToEnd: null },
    ],
  } as unknown as AmateurResult;

  const rate = (m: number, gflops: number) => ({ m, k: 1, n: 1, gflops: measured([gflops], "GFLOP/s") });

  it("divides by the same run's peak: 100 GFLOP/s over 2 GFLOP per token is 50 tokens/s", () => {
    const limits = { peakGflops: 100, matmul: [rate(1024, 100)], peers: [] } as unknown as LimitsResult;
    expect(endToEndCeilings(limits, amateur)).toEqual([
      {
        pair: "p",
        streams: 64,
        newTokens: 128,
        ceilingGflops: 100,
        ceilingTokensPerSecond: 50,
        tokensPerSecond: 25,
        fraction: 0.5,
        decodeTokensPerSecond: 40,
        decodeFraction: 0.8,
        batchRowsGflops: null,
        batchRowsTokensPerSecond: null,
        batchRowsFraction: null,
      },
    ]);
  });

  it("also divides by the best rate any library reached on as many rows as streams: 80 GFLOP/s is 40 tokens/s", () => {
    const limits = { peakGflops: 100, matmul: [rate(1024, 100), rate(64, 60)], peers: [{ matmul: [rate(64, 80), rate(8, 90)] }] } as unknown as LimitsResult;
    const [p] = endToEndCeilings(limits, amateur);
    expect([p.batchRowsGflops, p.batchRowsTokensPerSecond, p.batchRowsFraction]).toEqual([80, 40, 25 / 40]);
  });

  it("is left out without the limits section of the same run", () => {
    expect(endToEndCeilings(undefined, amateur)).toEqual([]);
  });
});

describe("the ceiling across libraries", () => {
  const rate = (m: number, gflops: number): MatmulRate => ({ m, k: 8, n: 8, gflops: measured([gflops], "GFLOP/s") });
  const ort = [rate(1, 10), rate(64, 120)];

  it("is the best median of any library, and says which and where", () => {
    const torch: PeerMatmul = { library: "torch", available: true, matmul: [rate(1, 5), rate(64, 150)], memoryRead: null };
    const numpy: PeerMatmul = { library: "numpy", available: false, missing: "numpy", install: "apt-get install python3-numpy", matmul: [], memoryRead: null };
    expect(peakOf(ort, [torch, numpy])).toEqual({ gflops: 150, by: { library: "torch", m: 64, k: 8, n: 8 } });
    expect(peakOf(ort, [numpy])).toEqual({ gflops: 120, by: { library: "onnxruntime", m: 64, k: 8, n: 8 } });
  });

  it("reads memory at the best median rate of any library that measured one", () => {
    const read = (gbPerSecond: number) => measured([gbPerSecond], "GB/s");
    const peer = (library: "torch" | "numpy", memoryRead: ReturnType<typeof read> | null): PeerMatmul => ({ library, available: memoryRead !== null, matmul: [], memoryRead });
    expect(peakReadOf(read(20), [peer("torch", read(28)), peer("numpy", read(13))])).toEqual({ gbPerSecond: 28, by: "torch" });
    expect(peakReadOf(read(20), [peer("torch", null), peer("numpy", read(13))])).toEqual({ gbPerSecond: 20, by: "onnxruntime" });
  });

  it("needs at least one measured rate", () => {
    expect(() => peakOf([], [])).toThrow(/matmul: holds no measured rate/);
  });

  it("names the BLAS a peer loaded, and flags the reference BLAS as slow", () => {
    expect(blasKind(["/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3", "/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblasp-r0.3.21.so"])).toBe("OpenBLAS");
    expect(blasKind(["/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0"])).toMatch(/^reference BLAS \(slow/);
    expect(blasKind(["/opt/intel/lib/libmkl_rt.so.2"])).toBe("MKL");
    expect(blasKind([])).toBe("none loaded");
  });
});

describe("log-probability comparison", () => {
  it("gives the largest difference, the scale, and argmax agreement per row", () => {
    const a = Float32Array.from([1, 5, 2, /* row 2 */ 0, -7, 3]);
    const b = Float32Array.from([1, 4.5, 2, /* row 2 */ 4, -7, 3.25]);
    // Row 1: diff 0.5, both argmax 1. Row 2: diff 4 at index 0, argmax 2 against 0.
    expect(compareLogProbs(a, b, 3)).toEqual({ maxAbsDiff: 4, maxAbsLogProb: 7, sameArgmax: 1, positions: 2 });
  });

  it("refuses arrays that are not rows of the vocabulary", () => {
    expect(() => compareLogProbs(new Float32Array(6), new Float32Array(5), 3)).toThrow(/do not make rows of 3/);
  });
});

describe("adapters section rows", () => {
  it("one adapter for every row, or the adapters in turn", () => {
    expect(rowAdapters(["a", "b", "c"], 4, false)).toEqual(["a", "a", "a", "a"]);
    expect(rowAdapters(["a", "b", "c"], 7, true)).toEqual(["a", "b", "c", "a", "b", "c", "a"]);
    expect(() => rowAdapters([], 2, true)).toThrow(/adapters: must hold at least one adapter/);
    expect(() => rowAdapters(["a"], 0, true)).toThrow(/rows: must be a positive integer, got 0/);
  });
});

describe("CPU time the benchmark reads", () => {
  it("the stolen share is stolen ticks over all ticks between two readings", () => {
    // 1,000 ticks passed, 50 of them stolen.
    expect(stolenShare({ total: 10_000, steal: 200 }, { total: 11_000, steal: 250 })).toBe(0.05);
    expect(stolenShare(null, { total: 1, steal: 0 })).toBeNull();
    expect(stolenShare({ total: 5, steal: 0 }, { total: 5, steal: 0 })).toBeNull();
  });

  it.runIf(process.platform === "linux")("reads this machine's counters and this process's threads' CPU time, which grows with work", () => {
    const times = cpuTimes();
    expect(times).not.toBeNull();
    expect(times!.steal).toBeGreaterThanOrEqual(0);
    expect(times!.total).toBeGreaterThan(times!.steal);
    const before = liveThreadsCpuSeconds(process.pid);
    const until = performance.now() + 30;
    while (performance.now() < until);
    const spent = liveThreadsCpuSeconds(process.pid) - before;
    expect(spent).toBeGreaterThan(0.01);
    expect(() => liveThreadsCpuSeconds(2 ** 22 + 1)).toThrow(/CPU time needs Linux/);
    // The tick counts cover the same threads at least (exited ones too), to a tick.
    expect(processCpuSeconds(process.pid) + 0.02).toBeGreaterThanOrEqual(liveThreadsCpuSeconds(process.pid));
  });
});
