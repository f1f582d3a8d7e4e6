// The batch's KV tensors carried from one step to the next (batch-kv.ts): whatever the
// scheduler does between steps (the same batch again, a row dropped, rows reordered, a
// sequence joining with its prompt, a cache truncated, two steps at once), every row's
// log-probabilities stay the float64 reference's, the rows are moved or copied exactly when they must
// be, and while a row is in the buffers they are its only copy.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { logSoftmax } from "#core/math/distribution.ts";
import { referenceLogits } from "#core/model/testing/reference-forward.ts";
import { buildOnnxModel } from "./export.ts";
import { BatchKv } from "./batch-kv.ts";
import { KvCache, allocateKv } from "./kv-cache.ts";
import { CausalLmSession } from "./session.ts";
import { maxAbsDiff } from "./testing/compare.ts";
import { randomWeights, tinyConfig } from "./testing/random-model.ts";

const config = tinyConfig("qwen2", { head_dim: 12, num_attention_heads: 4, num_key_value_heads: 2 });
const weights = randomWeights(config, 7);
let session: CausalLmSession;

// A session per test: what a session's buffers hold is what each test is about.
beforeEach(async () => {
  session = await CausalLmSession.open(buildOnnxModel(config, weights), { executionProvider: "cpu", threads: 1 });
});
afterEach(() => session.release());

interface Row {
  cache: KvCache;
  /** Every token the cache has seen, plus the pending ones. */
  history: number[];
  pending: number[];
}

const row = (prompt: number[]): Row => ({ cache: session.newCache(), history: [...prompt], pending: [...prompt] });

/** One step over `batch`; checks each row's last log-probabilities against the reference, queues a next token, and says whether the past was carried. */
async function step(batch: Row[]): Promise<boolean> {
  const out = await session.step(batch.map((r) => ({ cache: r.cache, tokens: r.pending, allPositions: true })));
  const carried = session.lastPhases.carriedKv;
  batch.forEach((r, b) => {
    expect(maxAbsDiff(out[b].logProbs, logSoftmax(referenceLogits(config, weights, r.history).at(-1)!))).toBeLessThan(1e-4);
    expect(r.cache.length).toBe(r.history.length);
    const next = (r.history.length * 17 + b) % config.vocabSize;
    r.history.push(next);
    r.pending = [next];
  });
  return carried;
}

describe("the batch's KV carried between steps", () => {
  it("is reused while the batch repeats and regrouped whenever it changes", async () => {
    const [a, b, c] = [row([5, 6, 7]), row([1, 2, 3, 4, 5, 6]), row([9])];
    const carried: boolean[] = [];
    const run = async (batch: Row[], times = 1) => {
      for (let i = 0; i < times; i++) carried.push(await step(batch));
    };
    await run([a, b, c], 3); // a prefill of unequal prompts, then two decode steps
    await run([a, c], 2); // a row dropped
    await run([c, a], 2); // reordered
    const d = row([40, 41, 42, 43]);
    await run([c, a, d], 2); // a prompt joins beside two decoding rows
    await run([a]); // stepped elsewhere in between: the carried copy is stale
    await run([c, a, d], 2);
    // Truncated to an earlier length: its row still holds its first positions, and the next one overwrites the rest.
    a.cache.truncate(a.cache.length - 1);
    a.history.splice(a.history.length - 2, 1);
    await run([c, a, d]);
    expect(carried).toEqual([false, true, true, false, true, false, true, false, true, false, false, true, true]);
  });

  it("a prefill of empty caches attends over no past slots; the next step over its rows' tokens and a few spare", async () => {
    const rows = [row([1, 2, 3]), row([4, 5, 6, 7, 8])];
    await step(rows);
    expect(session.lastPhases.pastSlots).toBe(0);
    expect(await step(rows)).toBe(true);
    // 5 + 1 new positions, 8 spare, rounded up to 8.
    expect(session.lastPhases.pastSlots).toBe(16);
  });

  it("moves its rows to wider slots when they outgrow the spare ones", async () => {
    const a = row([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
    const carried: boolean[] = [];
    for (let i = 0; i < 24; i++) carried.push(await step([a]));
    // The prompt's 16 tokens get 24 slots (16 + 8 spare); step 9 would write slot 24, past them,
    // so its rows move to 40 slots first (24 + 1 new + 8 spare, rounded up to 8).
    expect(carried.map((x, i) => (x ? -1 : i)).filter((i) => i >= 0)).toEqual([0, 9]);
    expect(session.lastPhases.pastSlots).toBe(40);
  });

  it("holds the only copy of its rows' positions, and hands a row back when it leaves the batch", async () => {
    const [a, b] = [row([1, 2, 3, 4]), row([5, 6])];
    for (let i = 0; i < 3; i++) await step([a, b]);
    expect([a.cache.allocatedBytes, b.cache.allocatedBytes]).toEqual([0, 0]);
    const perPosition = 2 * config.numLayers * config.numKvHeads * config.headDim * 4;
    expect(session.batchKvBytes).toBeGreaterThanOrEqual(2 * (a.cache.length + 1) * perPosition);
    // b sits out: the buffers now hold a alone, and b got its positions back, with room for a few more.
    await step([a]);
    expect(a.cache.allocatedBytes).toBe(0);
    expect(b.cache.allocatedBytes).toBeGreaterThanOrEqual(b.cache.length * perPosition);
    expect(b.cache.allocatedBytes).toBeLessThanOrEqual((b.cache.length + 32) * perPosition);
    // And back in beside a: its positions are right (the reference check in step), and lent again.
    expect(await step([a, b])).toBe(false);
    expect(b.cache.allocatedBytes).toBe(0);
  });

  it("leaves its rows in place while new sequences prefill beside them, then takes the new rows in", async () => {
    const [a, b] = [row([1, 2, 3]), row([4, 5, 6, 7])];
    await step([a, b]);
    await step([a, b]);
    const bytes = session.batchKvBytes;
    const c = row(Array.from({ length: 14 }, (_, i) => 8 + i));
    await step([c]);
    expect([a.cache.allocatedBytes, b.cache.allocatedBytes]).toEqual([0, 0]);
    expect(c.cache.allocatedBytes).toBeGreaterThan(0);
    // c joins between them, longer than the rows' 16 slots: the buffers grow to exactly three rows of 24 slots.
    expect(await step([a, c, b])).toBe(false);
    expect(session.lastPhases.pastSlots).toBe(24);
    const grown = session.batchKvBytes;
    const perRowSlot = bytes / (2 * 16);
    expect(grown).toBe(3 * 24 * perRowSlot);
    expect(await step([a, c, b])).toBe(true);
    // a leaves: c and b move down a row, in place, and the buffers shrink to their two rows.
    expect(await step([c, b])).toBe(false);
    expect(await step([c, b])).toBe(true);
    expect(session.batchKvBytes).toBe(2 * session.lastPhases.pastSlots * perRowSlot);
    expect(session.batchKvBytes).toBeLessThan(grown);
    // A long prompt joins: the rows no longer fit, and move to larger buffers.
    const e = row(Array.from({ length: 40 }, (_, i) => (3 * i) % config.vocabSize));
    await step([e]);
    expect(await step([c, b, e])).toBe(false);
    expect(session.batchKvBytes).toBeGreaterThan(grown);
    expect(await step([c, b, e])).toBe(true);
  });

  it("leaves its rows in place while another sequence's prompt is read in chunks beside them", async () => {
    const [a, b] = [row([1, 2, 3]), row([4, 5, 6, 7])];
    await step([a, b]);
    expect(await step([a, b])).toBe(true);
    const prompt = Array.from({ length: 12 }, (_, i) => 20 + i);
    const c = session.newCache();
    let last;
    for (let from = 0; from < prompt.length; from += 4) [last] = await session.step([{ cache: c, tokens: prompt.slice(from, from + 4) }]);
    expect(maxAbsDiff(last!.logProbs, logSoftmax(referenceLogits(config, weights, prompt).at(-1)!))).toBeLessThan(1e-4);
    // a and b never left the buffers: no positions handed back, and their next step is carried.
    expect([a.cache.allocatedBytes, b.cache.allocatedBytes]).toEqual([0, 0]);
    expect(await step([a, b])).toBe(true);
  });

  it("drops a discarded row without handing it back", async () => {
    const [a, b] = [row([1, 2, 3]), row([4, 5])];
    await step([a, b]);
    await step([a, b]);
    a.cache.discard();
    expect(a.cache.length).toBe(0);
    await step([b]);
    expect(a.cache.allocatedBytes).toBe(0);
    expect(b.cache.allocatedBytes).toBe(0);
  });

  it("two steps in flight at once on one session each get correct results", async () => {
    const first = [row([3, 1, 4]), row([1, 5, 9])];
    const second = [row([2, 6]), row([5, 3])];
    await Promise.all([step(first), step(second)]);
    // The first held the session's buffers and keeps them; the second, run beside it, built its own.
    expect(await step(first)).toBe(true);
    expect(await step(second)).toBe(false);
  });
});

describe.each([
  ["float32", 4],
  ["float16", 2],
] as const)("the batch's KV buffers (%s)", (kvType, bytesPerElement) => {
  const shape = { numLayers: 2, numKvHeads: 2, headDim: 3, kvType };
  const elementsPerPosition = shape.numKvHeads * shape.headDim;
  const bytesFor = (rows: number, slots: number) => shape.numLayers * 2 * rows * slots * elementsPerPosition * bytesPerElement;

  /** A step over `caches` adding `fresh` positions per row, each element written as a code of (cache, layer, kind, head, position, i). */
  function stepOver(kv: BatchKv, caches: KvCache[], fresh: number) {
    const step = kv.acquire(caches, fresh);
    caches.forEach((cache, row) => {
      for (let layer = 0; layer < shape.numLayers; layer++) {
        for (let k = 0; k < 2; k++) {
          const output = allocateKv(kvType, caches.length * shape.numKvHeads * fresh * shape.headDim);
          for (let h = 0; h < shape.numKvHeads; h++) {
            for (let t = 0; t < fresh; t++) {
              for (let i = 0; i < shape.headDim; i++) output[((row * shape.numKvHeads + h) * fresh + t) * shape.headDim + i] = code(cache, layer, k, h, cache.length + t, i);
            }
          }
          // A step beside the rows held (a prefill) runs on arrays of its own: the cache keeps its positions.
          if (!kv.store(step, layer, k, output, row, fresh, fresh, cache.length)) cache.appendFrom(layer, k === 0 ? "key" : "value", output, row, fresh, fresh);
        }
      }
      cache.commit(fresh);
    });
    kv.release(step);
    return step;
  }
  const ids = new Map<KvCache, number>();
  /** `count` empty caches numbered 1, 2, ... for `code`. */
  const numberedCaches = (count: number) =>
    Array.from({ length: count }, (_, i) => {
      const cache = new KvCache(shape);
      ids.set(cache, i + 1);
      return cache;
    });
  // Below 2^16, so float16 KV (raw bits in a Uint16Array) holds them as exactly as float32.
  const code = (cache: KvCache, layer: number, k: number, h: number, position: number, i: number) => ids.get(cache)! * 16_000 + layer * 4000 + k * 2000 + h * 1000 + position * 3 + i;

  /** Every position of every cache, read back from its own arrays after the buffers hand it back. */
  function expectPositions(caches: KvCache[]): void {
    for (const cache of caches) {
      for (let layer = 0; layer < shape.numLayers; layer++) {
        for (let k = 0; k < 2; k++) {
          const past = allocateKv(kvType, shape.numKvHeads * cache.length * shape.headDim);
          cache.copyInto(layer, k === 0 ? "key" : "value", past, 0, cache.length, 0);
          for (let h = 0; h < shape.numKvHeads; h++) {
            for (let t = 0; t < cache.length; t++) {
              for (let i = 0; i < shape.headDim; i++) expect(past[(h * cache.length + t) * shape.headDim + i]).toBe(code(cache, layer, k, h, t, i));
            }
          }
        }
      }
    }
  }

  it("grow and shrink in place as rows outgrow their slots, join and leave, and give the rows back intact", () => {
    const kv = new BatchKv(shape);
    const caches = numberedCaches(3);
    const [a, b, c] = caches;
    const first = stepOver(kv, [a, b], 4);
    const buffer = first.target.data[0].buffer;
    expect(kv.allocatedBytes).toBe(bytesFor(2, 16));
    // 4 positions and 12 new fill the 16 slots; the 13th moves the rows to 32 (17 + 8 spare) in the same buffers.
    let last = first;
    for (let i = 0; i < 13; i++) last = stepOver(kv, [a, b], 1);
    expect(last.target.data[0].buffer).toBe(buffer);
    expect(kv.allocatedBytes).toBe(bytesFor(2, 32));
    // c has its own positions; it joins, then a leaves and b moves down: the buffers shrink to two rows.
    stepOver(kv, [c], 5);
    stepOver(kv, [a, b, c], 1);
    const three = kv.allocatedBytes;
    last = stepOver(kv, [b, c], 1);
    expect(kv.allocatedBytes).toBeLessThan(three);
    expect(last.target.data[0].buffer).toBe(buffer);
    // Beyond KV_RESERVE_FACTOR times the first size the rows move to new buffers.
    for (let i = 0; i < 4 * 16; i++) last = stepOver(kv, [b, c], 1);
    expect(last.target.data[0].buffer).not.toBe(buffer);
    expectPositions(caches);
  });

  it("past the limit for resizable buffers use plain arrays, which move to new ones to grow and keep their size", () => {
    const kv = new BatchKv(shape, 0);
    const caches = numberedCaches(2);
    const first = stepOver(kv, caches, 4);
    expect((first.target.data[0].buffer as ArrayBuffer).resizable).toBe(false);
    let last = first;
    for (let i = 0; i < 13; i++) last = stepOver(kv, caches, 1);
    expect(last.target.data[0].buffer).not.toBe(first.target.data[0].buffer);
    const grown = kv.allocatedBytes;
    expect(grown).toBe(bytesFor(2, 32));
    last = stepOver(kv, caches.slice(1), 1);
    expect(kv.allocatedBytes).toBe(grown);
    expectPositions(caches);
  });
});
