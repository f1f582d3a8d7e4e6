// The amateur, decode and transport sections run end to end at tiny shapes (the built-in
// pair, a 2,000-token vocabulary on the wire): the two ways of scoring the amateur compute
// the same distributions, PyTorch's own Qwen2/Llama forward over the same safetensors gives
// ONNX Runtime's log-probabilities, and every transport variant delivers every step. No timing is
// asserted: on a shared machine only the structure and the computation can be checked.
import { describe, expect, it } from "vitest";
import { runAdapters } from "#bench/adapters.ts";
import { runAmateur, scoreTrajectories } from "#bench/amateur.ts";
import { ortLogProbs, runDecode } from "#bench/decode.ts";
import { decodeStepBytes, flopsPerToken } from "#bench/flops.ts";
import { runMemory } from "#bench/memory.ts";
import { BUILT_IN_PAIR, preparePair } from "#bench/models.ts";
import { findPython, runPeer } from "#bench/python-peers.ts";
import { openServedSession } from "#bench/engine-lockstep.ts";
import { benchSettings } from "#bench/settings.ts";
import type { BenchSettings } from "#bench/settings.ts";
import type { BenchReport } from "#bench/run-bench.ts";
import { renderReport } from "#bench/table.ts";
import { runTransport } from "#bench/transport.ts";
import { randomPrompts } from "#bench/workloads.ts";
import type { StepResult } from "#inference/model/session.ts";

const python = await findPython();
const base = benchSettings({ quick: true });
const tiny = (overrides: Partial<BenchSettings>): BenchSettings => ({ ...base, ...overrides });
/** The printed table of a report holding only `sections`. */
const printed = (sections: Partial<BenchReport>) =>
  renderReport({ quick: true, sections: [], sectionSeconds: {}, wallSeconds: 1, machine: { cpuModel: "Test CPU", cores: 2, vectorFeatures: [], memoryGiB: 1, platform: "", node: "", onnxruntimeNode: "", tfjs: "", glibcTunables: null, nodeFlags: [], loadAverageAtStart: 0, cpuTimesAtStart: null }, derived: { ceilingFractions: [], endToEndCeiling: [], amateurHeadBounds: [], decodeRooflines: [] }, ...sections } as BenchReport);

describe("amateur section at the built-in pair's shape", () => {
  it("lockstep, re-encoding and re-encoding with the head at every position compute the same distribution before every token", async () => {
    const prepared = await preparePair(BUILT_IN_PAIR, base.cacheDir);
    const amateur = await openServedSession(prepared.amateur.dir, "amateur");
    const everyPosition = await openServedSession(prepared.amateur.dir, "amateur", { head: "every position" });
    try {
      // The variant has the served graph's inputs and outputs (it cuts the kept positions after the head, onnx-graph.test.ts checks where).
      expect(everyPosition.io).toMatchObject({ keepsLogits: true, hasLogProbs: true });
      const vocab = prepared.amateur.config.vocabSize;
      const prompts = randomPrompts(vocab, 3, 5, 1);
      const continuations = randomPrompts(vocab, 3, 4, 2);
      const seen = { lockstep: [] as StepResult[][], "re-encode": [] as StepResult[][], "every position": [] as StepResult[][] };
      for (const way of ["lockstep", "re-encode"] as const) await scoreTrajectories(amateur, prompts, continuations, way, (t, results) => (seen[way][t] = results));
      await scoreTrajectories(everyPosition, prompts, continuations, "re-encode", (t, results) => (seen["every position"][t] = results));
      for (const way of ["re-encode", "every position"] as const) {
        expect(seen[way]).toHaveLength(4);
        for (let t = 0; t < 4; t++) {
          for (let b = 0; b < 3; b++) {
            const x = seen.lockstep[t][b].logProbs;
            const y = seen[way][t][b].logProbs;
            expect(x.length).toBe(vocab);
            expect(y.length).toBe(vocab);
            expect(Math.max(...x.map((v, i) => Math.abs(v - y[i])))).toBeLessThan(1e-4);
          }
        }
      }
      // Asked for every position, both give the same log-probabilities.
      const [all] = await amateur.step([{ cache: amateur.newCache(), tokens: prompts[0], allPositions: true }]);
      const [every] = await everyPosition.step([{ cache: everyPosition.newCache(), tokens: prompts[0], allPositions: true }]);
      expect(every.positionLogProbs!.length).toBe(prompts[0].length * vocab);
      expect(Math.max(...all.positionLogProbs!.map((v, i) => Math.abs(v - every.positionLogProbs![i])))).toBeLessThan(1e-4);
      await expect(scoreTrajectories(amateur, prompts, continuations.slice(1), "lockstep")).rejects.toThrow(/continuations: must hold one continuation per prompt/);
    } finally {
      await Promise.all([amateur.release(), everyPosition.release()]);
    }
  });

  it("reports both times, the position counts and the end-to-end run of the workload", async () => {
    const settings = tiny({
      amateur: { pairs: [{ name: "built-in", recipe: BUILT_IN_PAIR, promptTokens: 6, newTokens: 5, streams: 2, repeats: 2, endToEnd: { streams: 3, repeats: 1, maxPrefillBatch: 2 } }] },
    });
    const result = await runAmateur(settings, () => {});
    expect(result.pairs).toHaveLength(1);
    const p = result.pairs[0];
    expect(p.positions).toEqual({ lockstep: 10, reencode: 40, ratio: 4 });
    expect(p.cost.streams).toBe(2);
    expect(p.cost.lockstepSeconds.repeats).toHaveLength(2);
    expect(p.cost.speedup).toBeCloseTo(p.cost.reencodeSeconds.median / p.cost.lockstepSeconds.median, 10);
    expect(p.cost.reencodeEveryPositionSeconds.repeats).toHaveLength(2);
    expect(p.cost.everyPositionSpeedup).toBeCloseTo(p.cost.reencodeEveryPositionSeconds.median / p.cost.lockstepSeconds.median, 10);
    expect(p.multiplyAdds.everyPositionRatio).toBeGreaterThan(p.multiplyAdds.reencodeRatio);
    const e = p.endToEnd!;
    expect(e).toMatchObject({ streams: 3, newTokens: 5, maxPrefillBatch: 2, context: 6 + 3 });
    expect(e.flopsPerToken).toBe(e.expert.total + e.amateur.total);
    expect(e.tokensPerSecond.median).toBeGreaterThan(0);
    // The decode step's parts are timed inside it: each took some time, together no more than the step.
    const ms = e.decodeStepMs;
    for (const part of [ms.expert, ms.amateur, ms.summary]) expect(part.median).toBeGreaterThan(0);
    expect(ms.expert.median + ms.amateur.median + ms.summary.median).toBeLessThanOrEqual(ms.step.median);
    const table = printed({ amateur: result });
    expect(table).toMatch(/built-in: a decode step [\d.]+ ms = expert [\d.]+ \([\d.]+%\) \+ amateur [\d.]+ \([\d.]+%\) \+ summaries [\d.]+ \([\d.]+%\)/);
    expect(table).toContain("The amateur's cost on Test CPU");
    expect(table).toMatch(/built-in \(99,200\)\s+6 \+ 5\s+2\s+10.0 \/ 40.0 \(4.00x\)/);
    expect(table).toContain("as the reference does: LM head at every position");
    // Without the limits section there is no ceiling to hold the end-to-end rate against, and the table says so.
    expect(table).toContain("no limits section in this run");
  });
});

describe("adapters section at the built-in pair's shape", () => {
  it("times one adapter and three mixed on the same streams, and prints their ratio", async () => {
    const result = await runAdapters(tiny({ adapters: { pairs: [{ recipe: BUILT_IN_PAIR, streams: [3], promptTokens: 4, steps: 2, repeats: 2 }] } }), () => {});
    expect(result).toMatchObject({ rank: 8, adapters: 3 });
    const [p] = result.pairs;
    expect(p.pair.name).toBe("built-in");
    expect(p.rows).toHaveLength(1);
    const row = p.rows[0];
    expect(row.streams).toBe(3);
    expect(row.one.repeats).toHaveLength(2);
    expect(row.mixed.repeats).toHaveLength(2);
    expect(row.ratio).toBeCloseTo(row.mixed.median / row.one.median, 10);
    const table = printed({ adapters: result });
    expect(table).toContain("Adapters mixed in one batch on Test CPU");
    expect(table).toMatch(/built-in \(99,200\)\s+3\s/);
  });
});

describe.skipIf(!python?.has.torch)("decode section: PyTorch's forward is ONNX Runtime's computation", () => {
  it("the peer's log-probabilities match the runner's over a prefill and cached steps", async () => {
    const prepared = await preparePair(BUILT_IN_PAIR, base.cacheDir);
    const tokens = randomPrompts(prepared.expert.config.vocabSize, 1, 9, 5)[0];
    const session = await openServedSession(prepared.expert.dir, "expert");
    let ort: Float32Array;
    try {
      ort = await ortLogProbs(session, tokens, 6);
      // The cached steps give what one pass over all nine tokens gives.
      const whole = (await session.step([{ cache: session.newCache(), tokens, allPositions: true }]))[0].positionLogProbs!;
      expect(Math.max(...ort.map((v, i) => Math.abs(v - whole[i])))).toBeLessThan(1e-4);
    } finally {
      await session.release();
    }
    const result = await runDecode(
      tiny({ decode: { recipe: BUILT_IN_PAIR, batches: [1, 3], promptTokens: 4, steps: 2, repeats: 2, maxPrefillBatch: 2, parity: { prefillTokens: 6, decodeTokens: 3 } } }),
      () => {},
    );
    expect(result.torch?.version).toMatch(/^1\.|^2\./);
    expect(result.parity).toMatchObject({ prefillTokens: 6, decodeTokens: 3, positions: 9, sameArgmax: 9 });
    expect(result.parity!.maxAbsDiff).toBeLessThan(1e-4);
    expect(result.rows.map((r) => r.batch)).toEqual([1, 3]);
    for (const row of result.rows) {
      expect(row.onnxruntime.repeats).toHaveLength(2);
      expect(row.torch!.repeats).toHaveLength(2);
      expect(row.speedup).toBeCloseTo(row.onnxruntime.median / row.torch!.median, 10);
      // Timed steps run at contexts 6..9 (a 4-token prompt, one untimed step, then 2 x 2 timed): mean 7.5.
      expect(row.step).toEqual({ context: 7.5, flops: row.batch * flopsPerToken(prepared.expert.config, 7.5).total, bytes: decodeStepBytes(prepared.expert.config, row.batch, 7.5) });
    }
    const table = printed({ decode: result });
    expect(table).toMatch(/roofline tok\/s \(bound by\)/);
    expect(table).toMatch(/Expert decode on Test CPU: built-in expert \(99,200\), .*; PyTorch \S+ eager on \S+/);
    expect(table).toMatch(/same argmax at 9 of 9/);
  });

  it("a peer refuses an unknown task with an error line", async () => {
    await expect(runPeer("qwen2_torch.py", { task: "train", modelDir: "/nonexistent" }, 60_000)).rejects.toThrow(/task: 'train' is not decode or log_probs/);
  });
});

describe("transport section at a tiny vocabulary", () => {
  it("every variant delivers every step; the breakdown comes from the same medians", async () => {
    const settings = tiny({ transport: { vocabSize: 2000, steps: { full32: 12, full16: 12, sparse: 40 }, repeats: 2, alpha: 0.2, topK: 4 } });
    const result = await runTransport(settings, () => {});
    expect(result.rows.map((r) => r.encoding)).toEqual(["full32", "full16", "sparse"]);
    for (const row of result.rows) {
      for (const m of [row.grpcStepsPerSecond, row.grpcWideWindowStepsPerSecond, row.http2StepsPerSecond, row.http2WideWindowStepsPerSecond, row.rawGrpcStepsPerSecond, row.rawGrpcWideWindowStepsPerSecond, row.tcpStepsPerSecond]) {
        expect(m.repeats).toHaveLength(2);
        expect(m.repeats.every((v) => v > 0)).toBe(true);
      }
      expect(row.grpcOverTcpPerRepeat.repeats).toEqual(row.grpcStepsPerSecond.repeats.map((v, i) => v / row.tcpStepsPerSecond.repeats[i]));
      expect(row.breakdown.clientMs).toBeCloseTo(1000 / row.grpcWideWindowStepsPerSecond.median, 10);
      const b = row.breakdown;
      expect(b.tcpMs + b.http2Ms + b.grpcJsMs + b.protobufMs).toBeCloseTo(b.clientMs, 10);
      expect(b.clientMs + b.defaultWindowMs).toBeCloseTo(1000 / row.grpcStepsPerSecond.median, 10);
      expect(row.serializeMsPerStep.median).toBeGreaterThan(0);
      // Every step costs some CPU, each variant's readings are its own, and the CPU layers sum the same way.
      for (const m of Object.values(row.cpuMsPerStep)) expect(m.repeats.every((v) => v > 0)).toBe(true);
      const c = row.cpuBreakdown;
      expect(c.clientMs).toBe(row.cpuMsPerStep.grpcWide.min);
      expect(c.tcpMs + c.http2Ms + c.grpcJsMs + c.protobufMs).toBeCloseTo(c.clientMs, 10);
    }
    // float32: two vectors of 2,000 values, 16,000 bytes of payload plus the message's framing.
    expect(result.rows[0].bytesPerStep).toBeGreaterThan(16_000);
    expect(result.rows[0].bytesPerStep).toBeLessThan(16_200);
    const table = printed({ transport: result });
    expect(table).toContain("Transport on loopback on Test CPU, vocabulary 2,000");
    expect(table).toMatch(/where a step's time goes/);
    expect(table).toMatch(/the same layers in CPU time/);
  });
});

describe("memory section on the built-in pair", () => {
  it("reads the served process's memory idle, after each stream count and after the burst, beside each stream's KV", async () => {
    const settings = tiny({ memory: { pairs: [BUILT_IN_PAIR], streams: [1, 4], promptTokens: 8, newTokens: 8 } });
    const result = await runMemory(settings, () => {});
    const [served] = result.inference;
    expect(served.byStreams.map((b) => b.streams)).toEqual([1, 4]);
    // The service's own reading of its longest event-loop hold (a serve shorter than its 10 ms sampling may read 0).
    for (const { eventLoopHoldSeconds } of served.byStreams) expect(Number.isFinite(eventLoopHoldSeconds) && eventLoopHoldSeconds >= 0).toBe(true);
    for (const { memory } of [...served.byStreams, { memory: served.idle }, { memory: served.afterwards }]) {
      expect(memory.rssBytes).toBeGreaterThan(0);
      expect(memory.peakRssBytes).toBeGreaterThanOrEqual(memory.rssBytes);
    }
    // The peak only grows; what stays resident after the burst is at most that peak.
    expect(served.byStreams[1].memory.peakRssBytes).toBeGreaterThanOrEqual(served.byStreams[0].memory.peakRssBytes);
    expect(served.afterwards.rssBytes).toBeLessThanOrEqual(served.afterwards.peakRssBytes);
    expect(served.perExtraStreamBytes).toBe((served.byStreams[1].memory.peakRssBytes - served.byStreams[0].memory.peakRssBytes) / 3);
    // Two models' float32 keys and values at 16 positions.
    const kv = (c: { numLayers: number; numKvHeads: number; headDim: number }) => 2 * c.numLayers * c.numKvHeads * c.headDim * 4 * 16;
    const prepared = await preparePair(BUILT_IN_PAIR, base.cacheDir);
    expect(served.kvCachePerStreamBytes).toBe(kv(prepared.expert.config) + kv(prepared.amateur.config));
    const table = printed({ memory: result });
    expect(table).toContain("Memory on Test CPU: peak resident set");
    expect(table).toMatch(/resident after, 1 stream/);
  });
});
