// The benchmark's pure helpers: medians over repeats, the figures' formatting, the table
// layout, the FLOPs arithmetic behind the ceiling, and the derived per-stream memory.
import { describe, expect, it } from "vitest";
import { decodeStepBytes, flopsPerToken, meanContext } from "#bench/flops.ts";
import { amateurMultiplyAdds } from "#bench/amateur.ts";
import { kvCacheBytes, perExtraStream } from "#bench/memory.ts";
import { amateurHeadBounds, decodeRooflines, parseSections } from "#bench/run-bench.ts";
import type { AmateurResult } from "#bench/amateur.ts";
import type { LimitsResult } from "#bench/limits.ts";
import { roofline } from "#bench/limits.ts";
import type { DecodeResult } from "#bench/decode.ts";
import { BenchInputError, formatBytes, formatMeasured, formatNumber, formatPercent, formatRatio, measured, median, ratio, repeat } from "#bench/stats.ts";
import { renderTable } from "#bench/text-table.ts";
import { parseModelConfig } from "#core/model/config.ts";

describe("median and repeats", () => {
  it("takes the middle value, or the mean of the middle two, whatever the order", () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([10, 1, 4, 3])).toBe(3.5);
    expect(median([7])).toBe(7);
    // One slow outlier (a busy neighbour) does not move it, unlike a mean.
    expect(median([100, 101, 99, 5000, 100])).toBe(100);
  });

  it("refuses an empty list and non-finite repeats, naming the repeat", () => {
    expect(() => median([])).toThrow(BenchInputError);
    expect(() => median([1, NaN])).toThrow(/^values\[1\]: is NaN/);
    expect(() => median([Infinity])).toThrow(/^values\[0\]/);
  });

  it("keeps every repeat with the median and the extremes", () => {
    expect(measured([5, 1, 3], "ms")).toEqual({ median: 3, min: 1, max: 5, repeats: [5, 1, 3], unit: "ms" });
    expect(ratio(measured([4, 6], "x"), measured([2], "x"))).toBe(2.5);
    expect(ratio(1, 0)).toBeNull();
  });

  it("runs warm-ups unrecorded, then the repeats in order", async () => {
    const calls: number[] = [];
    const m = await repeat({ repeats: 3, warmup: 2, unit: "n" }, (i) => {
      calls.push(i);
      return i * 10;
    });
    expect(calls).toEqual([-1, -2, 0, 1, 2]);
    expect(m.repeats).toEqual([0, 10, 20]);
    await expect(repeat({ repeats: 0, unit: "n" }, () => 1)).rejects.toThrow(/^repeats: must be a positive integer, got 0/);
  });
});

describe("formatting", () => {
  it("prints about three significant digits with separators", () => {
    expect(formatNumber(151_936)).toBe("151,936");
    expect(formatNumber(87.345)).toBe("87.3");
    expect(formatNumber(5.678)).toBe("5.68");
    expect(formatNumber(0.04123)).toBe("0.0412");
    expect(formatNumber(0)).toBe("0");
    expect(formatNumber(null)).toBe("-");
    expect(formatRatio(12.345)).toBe("12.3x");
    expect(formatRatio(null)).toBe("-");
    expect(formatPercent(0.4123)).toBe("41.2%");
    expect(formatBytes(1_215_521)).toBe("1.16 MiB");
    expect(formatBytes(138)).toBe("138 B");
  });

  it("shows a median with its range, or alone when the repeats agree", () => {
    expect(formatMeasured(measured([90, 87.3, 85.1], "x"))).toBe("87.3 (85.1-90.0)");
    expect(formatMeasured(measured([2, 2], "x"))).toBe("2.00");
    expect(formatMeasured(undefined)).toBe("-");
  });

  it("pads columns to the widest cell, numbers right-aligned", () => {
    const table = renderTable(["pair", "tok/s"], [["built-in", "1,234"], ["qwen", "5.6"]]);
    expect(table.split("\n")).toEqual(["pair      tok/s", "--------  -----", "built-in  1,234", "qwen        5.6"]);
  });
});

describe("FLOPs per token", () => {
  it("counts 2 per linear weight and LM-head weight plus attention over the context", () => {
    const config = parseModelConfig({ model_type: "llama", vocab_size: 10, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1 });
    // Per layer: q 8x8, k 4x8, v 4x8, o 8x8, gate 16x8, up 16x8, down 8x16 = 64+32+32+64+128+128+128 = 576 weights.
    const f = flopsPerToken(config, 5);
    expect(f.linear).toBe(2 * 2 * 576);
    expect(f.lmHead).toBe(2 * 10 * 8);
    expect(f.attention).toBe(4 * 2 * 2 * 4 * 5);
    expect(f.total).toBe(f.linear + f.lmHead + f.attention);
    expect(meanContext(16, 8)).toBe(20.5);
  });

  it("counts the bytes a decode step reads: the weights once for the batch, each row's keys and values", () => {
    const config = parseModelConfig({ model_type: "llama", vocab_size: 10, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1 });
    // 2 x 576 linear weights + 10 x 8 head = 1,232 weights; keys and values: 2 x 2 layers x 1 head x 4 dims = 16 values per position.
    expect(decodeStepBytes(config, 1, 5)).toBe(4 * (1232 + 16 * 5));
    expect(decodeStepBytes(config, 3, 5)).toBe(4 * (1232 + 3 * 16 * 5));
    expect(decodeStepBytes(config, 3, 5, 2)).toBe(2 * (1232 + 3 * 16 * 5));
  });

  it("bounds a step by the slower of its bytes at the read peak and its FLOPs at the MatMul peak", () => {
    // 2 GB at 25 GB/s = 80 ms against 1 GFLOP at 100 GFLOP/s = 10 ms: memory binds.
    expect(roofline({ bytes: 2e9, flops: 1e9 }, 100, 25)).toEqual({ seconds: 0.08, boundBy: "memory" });
    // 64 rows: 2.1 GB = 84 ms against 64 GFLOP = 640 ms: compute binds.
    expect(roofline({ bytes: 2.1e9, flops: 64e9 }, 100, 25)).toEqual({ seconds: 0.64, boundBy: "compute" });
  });

  it("holds each decode batch against its roofline in the same run", () => {
    const limits = { peakGflops: 100, peakReadGBs: 25 } as unknown as LimitsResult;
    const row = (batch: number, flops: number, bytes: number, ort: number, torch: number | null) => ({ batch, step: { flops, bytes, context: 40 }, onnxruntime: measured([ort], "tokens/s"), torch: torch === null ? null : measured([torch], "tokens/s"), speedup: null });
    const decode = { rows: [row(1, 1e9, 2e9, 10, 5), row(64, 64e9, 2.1e9, 80, null)] } as unknown as DecodeResult;
    // Batch 1: 80 ms a step, 12.5 tokens/s; batch 64: 640 ms, 100 tokens/s.
    const [one, many] = decodeRooflines(limits, decode);
    expect(one).toMatchObject({ batch: 1, boundBy: "memory", torchFraction: 0.4 });
    expect(one.tokensPerSecond).toBeCloseTo(12.5, 10);
    expect(one.onnxruntimeFraction).toBeCloseTo(0.8, 10);
    expect(many).toMatchObject({ batch: 64, boundBy: "compute", torchFraction: null });
    expect(many.tokensPerSecond).toBeCloseTo(100, 10);
    expect(many.onnxruntimeFraction).toBeCloseTo(0.8, 10);
    expect(decodeRooflines(undefined, decode)).toEqual([]);
  });

  it("counts the amateur's multiply-adds per trajectory each way, the head once per step or at every position", () => {
    const config = parseModelConfig({ model_type: "llama", vocab_size: 10, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1 });
    // Per position: 2 layers x 576 weights, and attention 2 x 2 layers x 2 heads x 4 dims per key attended; head 10 x 8.
    const body = (i: number) => 2 * 576 + 2 * 2 * 2 * 4 * i;
    const head = 80;
    // A 2-token prompt and 2 new tokens: lockstep covers positions 1..3; re-encoding covers 1..2, then 1..3.
    const m = amateurMultiplyAdds(config, 2, 2);
    expect(m.lockstep).toBe(body(1) + body(2) + body(3) + 2 * head);
    expect(m.reencode).toBe(2 * body(1) + 2 * body(2) + body(3) + 2 * head);
    expect(m.reencodeEveryPosition).toBe(2 * body(1) + 2 * body(2) + body(3) + (2 + 3) * head);
    expect(m.everyPositionRatio).toBe(m.reencodeEveryPosition / m.lockstep);
    expect(m.head).toBe(head);
    expect(() => amateurMultiplyAdds(config, 0, 2)).toThrow(BenchInputError);
  });

  it("one stream's KV cache is keys and values of every layer and KV head of both models", () => {
    const expert = { numLayers: 24, numKvHeads: 2, headDim: 64 };
    const amateur = { numLayers: 6, numKvHeads: 1, headDim: 64 };
    // float32: 24 x 2 x 2 x 64 x 4 + 6 x 2 x 1 x 64 x 4 = 24,576 + 3,072 bytes per position.
    expect(kvCacheBytes([expert, amateur], 192)).toBe(192 * (24_576 + 3_072));
  });
});

describe("derived figures", () => {
  const mem = (streams: number, mib: number) => ({ streams, memory: { peakRssBytes: mib * 2 ** 20, rssBytes: 0, fileRssBytes: 0 } });

  it("per extra stream is the slope between the fewest and the most streams", () => {
    expect(perExtraStream([mem(1, 100), mem(4, 110), mem(64, 226)])).toBe(2 * 2 ** 20);
    expect(perExtraStream([mem(1, 100)])).toBeNull();
    // Any reading's slope, e.g. the pages mapped from the weight files.
    const files = (streams: number, mib: number) => ({ streams, memory: { peakRssBytes: 0, rssBytes: 0, fileRssBytes: mib * 2 ** 20 } });
    expect(perExtraStream([files(1, 10), files(5, 30)], (m) => m.fileRssBytes)).toBe(5 * 2 ** 20);
  });

  it("bounds the amateur's ratio by its LM head at the best rate any library reached on that product", () => {
    const rate = (m: number, k: number, n: number, gflops: number) => ({ m, k, n, gflops: measured([gflops], "GFLOP/s") });
    // ONNX Runtime 100 GFLOP/s on the head's shape, numpy 120 on it, and a faster rate on another shape that must not count.
    const limits = { matmul: [rate(16, 448, 151_936, 100), rate(1024, 1024, 1024, 300)], peers: [{ library: "numpy" as const, available: true, matmul: [rate(16, 448, 151_936, 120)] }], peakReadGBs: 25 };
    const pair = (streams: number) => ({
      pair: { name: "p", expertParameters: 1, amateurParameters: 1, vocabSize: 151_936 },
      newTokens: 128,
      multiplyAdds: { head: 448 * 151_936 },
      cost: { streams, lockstepSeconds: measured([4.5], "s"), reencodeEveryPositionSeconds: measured([170], "s") },
    });
    const [bound] = amateurHeadBounds(limits as unknown as LimitsResult, { how: "", pairs: [pair(16)] } as unknown as AmateurResult);
    // 128 steps x 2 x 16 x 448 x 151,936 FLOPs = 278.8 GFLOP, at 120 GFLOP/s 2.323 s; 170 / 2.323 = 73.2x.
    expect(bound).toMatchObject({ rows: 16, hidden: 448, vocab: 151_936, gflops: 120, library: "numpy", lockstepSeconds: 4.5 });
    expect(bound.headSeconds).toBeCloseTo((128 * 2 * 16 * 448 * 151_936) / 120e9, 12);
    expect(bound.headSeconds).toBeCloseTo(2.3234, 4);
    expect(bound.maxRatio).toBeCloseTo(73.17, 2);
    // 448 x 151,936 float32 weights = 272,269,312 bytes a step, 128 steps at 25 GB/s: 1.394 s.
    expect(bound.headBytes).toBe(272_269_312);
    expect(bound.readPeakSeconds).toBeCloseTo(1.394, 3);
    // No rate on 8 rows of that head: no bound rather than one from another shape.
    expect(amateurHeadBounds(limits as unknown as LimitsResult, { how: "", pairs: [pair(8)] } as unknown as AmateurResult)).toEqual([]);
    expect(amateurHeadBounds(undefined, { how: "", pairs: [pair(16)] } as unknown as AmateurResult)).toEqual([]);
  });

  it("--only accepts known sections in the run's order and refuses unknown ones", () => {
    expect(parseSections(["memory,step", "limits"])).toEqual(["step", "limits", "memory"]);
    expect(parseSections(undefined)).toEqual(["step", "limits", "amateur", "decode", "adapters", "transport", "sampling", "training", "scale", "memory"]);
    expect(parseSections(["decode,limits,amateur"])).toEqual(["limits", "amateur", "decode"]);
    expect(() => parseSections(["speed"])).toThrow(/^--only: unknown section "speed"; choose from step, limits/);
  });
});
