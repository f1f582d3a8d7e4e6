// The prepacked cache on the tiny random expert that init-model writes: the first open writes
// an entry, the second reads it, and both decode bit for bit as an uncached session does; a
// changed weights file makes a new entry and drops the stale one; an unreadable entry is
// written again; a folder that cannot be written leaves an uncached session that still works.
import { existsSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeTinyPair } from "#test/inference/helpers.ts";
import type { TinyPair } from "#test/inference/helpers.ts";
import { SERVED_GRAPH_OPTIONS, servedGraph } from "#inference/engine/served-model.ts";
import { CausalLmSession } from "./session.ts";
import { prepackedCacheKey } from "./prepacked-cache.ts";

let pair: TinyPair;
let scratch: string;
beforeAll(() => {
  pair = writeTinyPair();
  scratch = mkdtempSync(join(tmpdir(), "lightreasoner-prepacked-"));
});
afterAll(() => {
  pair?.remove();
  rmSync(scratch, { recursive: true, force: true });
});

const PROMPT = [5, 17, 3, 42, 8, 19];

/** The log-probabilities of a 6-token prefill and three decode steps, all rows concatenated. */
async function decode(cacheDir?: string): Promise<{ rows: Float32Array[]; log: string[] }> {
  const log: string[] = [];
  const session = await CausalLmSession.open(servedGraph(pair.expertDir, SERVED_GRAPH_OPTIONS.expert).graph, {
    executionProvider: "cpu",
    threads: 1,
    prepackedCacheDir: cacheDir,
    log: (line) => log.push(line),
  });
  try {
    const cache = session.newCache();
    const rows = [(await session.step([{ cache, tokens: PROMPT }]))[0].logProbs.slice()];
    for (const token of [7, 11, 13]) rows.push((await session.step([{ cache, tokens: [token] }]))[0].logProbs.slice());
    return { rows, log };
  } finally {
    await session.release();
  }
}

const entries = (dir: string) => readdirSync(dir).filter((name) => !name.startsWith("."));

describe("prepacked cache", () => {
  it("writes an entry on the first open, reads it on the next, and decodes bit for bit as without it", async () => {
    const cacheDir = join(scratch, "same");
    const uncached = await decode();
    const first = await decode(cacheDir);
    expect(first.log.some((l) => l.startsWith("onnxruntime: prepacked weights written to "))).toBe(true);
    expect(entries(cacheDir)).toHaveLength(1);
    const entry = join(cacheDir, entries(cacheDir)[0]);
    expect(existsSync(join(entry, "model.onnx")) && existsSync(join(entry, "weights.bin"))).toBe(true);

    const second = await decode(cacheDir);
    expect(second.log.some((l) => l.startsWith(`onnxruntime: prepacked weights read from ${entry}`))).toBe(true);
    for (const run of [first, second]) run.rows.forEach((row, i) => expect(row).toEqual(uncached.rows[i]));
  });

  it("keys an entry by the weights file: a modified file makes a new entry and drops the stale one", async () => {
    const cacheDir = join(scratch, "modified");
    const graph = servedGraph(pair.expertDir, SERVED_GRAPH_OPTIONS.expert).graph;
    const source = { bytes: graph.bytes, sourceFiles: graph.sourceFiles!, graphOptimizationLevel: "all" };
    await decode(cacheDir);
    const before = entries(cacheDir);
    const keyBefore = prepackedCacheKey(source);
    const later = new Date(Date.now() + 60_000);
    utimesSync(graph.sourceFiles![0], later, later);
    expect(prepackedCacheKey(source)).not.toBe(keyBefore);
    const after = await decode(cacheDir);
    expect(after.log.some((l) => l.startsWith("onnxruntime: prepacked weights written to "))).toBe(true);
    expect(entries(cacheDir)).toHaveLength(1);
    expect(entries(cacheDir)[0]).not.toBe(before[0]);
    // Same model, other graph (the amateur's role has no LoRA inputs): another key.
    const amateurGraph = servedGraph(pair.expertDir, SERVED_GRAPH_OPTIONS.amateur).graph;
    expect(prepackedCacheKey({ ...source, bytes: amateurGraph.bytes })).not.toBe(prepackedCacheKey(source));
  });

  it("writes an unreadable entry again", async () => {
    const cacheDir = join(scratch, "corrupt");
    const uncached = await decode();
    await decode(cacheDir);
    const entry = join(cacheDir, entries(cacheDir)[0]);
    writeFileSync(join(entry, "model.onnx"), "not an ONNX model");
    const again = await decode(cacheDir);
    expect(again.log.some((l) => l.startsWith(`onnxruntime: prepacked cache entry ${entry} is unreadable`))).toBe(true);
    expect(again.log.some((l) => l.startsWith("onnxruntime: prepacked weights written to "))).toBe(true);
    again.rows.forEach((row, i) => expect(row).toEqual(uncached.rows[i]));
    const third = await decode(cacheDir);
    expect(third.log.some((l) => l.startsWith("onnxruntime: prepacked weights read from "))).toBe(true);
  });

  it("opens without the cache, saying why, when its folder cannot be made", async () => {
    const blocker = join(scratch, "a-file");
    writeFileSync(blocker, "");
    const uncached = await decode();
    const run = await decode(join(blocker, "cache"));
    expect(run.log.some((l) => l.startsWith("onnxruntime: prepacked cache not written ("))).toBe(true);
    run.rows.forEach((row, i) => expect(row).toEqual(uncached.rows[i]));
  });
});
