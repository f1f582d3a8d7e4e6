// The prepacked cache on the tiny random expert that init-model writes: the first open writes
// an entry, the second reads it, and both decode bit for bit as an uncached session does; a
// changed weights file (even rewritten in place with its times set back) makes a new entry and
// drops the stale one, while the other role's entry of the same files stays; an unreadable
// entry is written again; a folder that cannot be made or that every user may write leaves an
// uncached session that still works. No build folder is ever left behind.
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeTinyPair } from "#test/inference/helpers.ts";
import type { TinyPair } from "#test/inference/helpers.ts";
import { SERVED_GRAPH_OPTIONS, servedGraph } from "#inference/engine/served-model.ts";
import { CausalLmSession } from "./session.ts";
import type { ModelRole } from "#inference/engine/served-model.ts";

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
async function decode(cacheDir?: string, role: ModelRole = "expert"): Promise<{ rows: Float32Array[]; log: string[] }> {
  const log: string[] = [];
  const session = await CausalLmSession.open(servedGraph(pair.expertDir, SERVED_GRAPH_OPTIONS[role]).graph, {
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

/** The entries in a cache folder, after checking that no build folder was left there. */
function entries(dir: string): string[] {
  const names = readdirSync(dir);
  expect(names.filter((name) => name.startsWith(".building-"))).toEqual([]);
  return names;
}

const wrote = (run: { log: string[] }) => run.log.some((l) => l.startsWith("onnxruntime: prepacked weights written to "));
const read = (run: { log: string[] }) => run.log.some((l) => l.startsWith("onnxruntime: prepacked weights read from "));

describe("prepacked cache", () => {
  it("writes an entry on the first open, reads it on the next, and decodes bit for bit as without it", async () => {
    const cacheDir = join(scratch, "same");
    const uncached = await decode();
    const first = await decode(cacheDir);
    expect(wrote(first)).toBe(true);
    expect(entries(cacheDir)).toHaveLength(1);
    const entry = join(cacheDir, entries(cacheDir)[0]);
    expect(existsSync(join(entry, "model.onnx")) && existsSync(join(entry, "weights.bin"))).toBe(true);

    const second = await decode(cacheDir);
    expect(second.log.some((l) => l.startsWith(`onnxruntime: prepacked weights read from ${entry}`))).toBe(true);
    for (const run of [first, second]) run.rows.forEach((row, i) => expect(row).toEqual(uncached.rows[i]));
  });

  it("keys an entry by the weights file's state: a touched file makes a new entry and drops the stale one, the other role's stays", async () => {
    const cacheDir = join(scratch, "touched");
    await decode(cacheDir);
    const amateurRole = await decode(cacheDir, "amateur");
    expect(wrote(amateurRole)).toBe(true);
    const before = entries(cacheDir);
    expect(before).toHaveLength(2);
    const weights = join(pair.expertDir, "model.safetensors");
    const later = new Date(Date.now() + 60_000);
    utimesSync(weights, later, later);
    const after = await decode(cacheDir);
    expect(wrote(after)).toBe(true);
    // The expert's new entry replaced its stale one; the amateur graph's entry (same files, stale too) is another model's and stays until it is opened.
    const now = entries(cacheDir);
    expect(now).toHaveLength(2);
    expect(now.filter((name) => !before.includes(name))).toHaveLength(1);
  });

  it("sees weights rewritten in place with their times set back (the change time moves)", async () => {
    const cacheDir = join(scratch, "rewritten");
    const original = await decode(cacheDir);
    const weights = join(pair.expertDir, "model.safetensors");
    const { atime, mtime, size } = statSync(weights);
    // The file's last four bytes end some tensor's data: same size, new value.
    const fd = openSync(weights, "r+");
    writeSync(fd, Buffer.from(Float32Array.of(0.75).buffer), 0, 4, size - 4);
    closeSync(fd);
    utimesSync(weights, atime, mtime);
    const uncached = await decode();
    expect(uncached.rows.some((row, i) => row.some((v, j) => v !== original.rows[i][j]))).toBe(true);
    const cached = await decode(cacheDir);
    expect(wrote(cached)).toBe(true);
    cached.rows.forEach((row, i) => expect(row).toEqual(uncached.rows[i]));
    expect(entries(cacheDir)).toHaveLength(1);
  });

  it("writes an unreadable entry again", async () => {
    const cacheDir = join(scratch, "corrupt");
    const uncached = await decode();
    await decode(cacheDir);
    const entry = join(cacheDir, entries(cacheDir)[0]);
    writeFileSync(join(entry, "model.onnx"), "not an ONNX model");
    const again = await decode(cacheDir);
    expect(again.log.some((l) => l.startsWith(`onnxruntime: prepacked cache entry ${entry} is unreadable`))).toBe(true);
    expect(wrote(again)).toBe(true);
    again.rows.forEach((row, i) => expect(row).toEqual(uncached.rows[i]));
    expect(read(await decode(cacheDir))).toBe(true);
  });

  it("opens without the cache, saying why, when its folder cannot be made or every user may write it", async () => {
    const uncached = await decode();
    const blocker = join(scratch, "a-file");
    writeFileSync(blocker, "");
    const shared = join(scratch, "world-writable");
    mkdirSync(shared);
    chmodSync(shared, 0o777);
    for (const [cacheDir, reason] of [
      [join(blocker, "cache"), "onnxruntime: prepacked cache not used (ENOTDIR"],
      [shared, `onnxruntime: prepacked cache not used: ${shared} is writable by every user (mode 777)`],
    ]) {
      const run = await decode(cacheDir);
      expect(run.log.some((l) => l.startsWith(reason))).toBe(true);
      expect(wrote(run) || read(run)).toBe(false);
      run.rows.forEach((row, i) => expect(row).toEqual(uncached.rows[i]));
    }
    expect(readdirSync(shared)).toEqual([]);
  });
});
