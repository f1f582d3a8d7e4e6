// The prepack cache on the tiny random pair: a first open writes one whole entry and a second
// maps it, both giving the log-probs of the session prepacked in memory; a changed model gets
// an entry of its own (never the stale one); an entry ONNX Runtime cannot open is logged,
// removed and rebuilt; an unwritable cache directory leaves the plain session.
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initModel } from "#core/model/init-model.ts";
import { openModelSession } from "#inference/engine/served-model.ts";
import { EXPERT_CONFIG, maxAbsDiff, writeTinyPair } from "#test/inference/helpers.ts";
import type { TinyPair } from "#test/inference/helpers.ts";
import type { CausalLmSession } from "./session.ts";

const PROMPT = [5, 17, 42, 99, 3];

let pair: TinyPair;
let cacheRoot: string;
beforeAll(() => {
  pair = writeTinyPair();
  cacheRoot = mkdtempSync(join(tmpdir(), "lightreasoner-prepack-cache-"));
});
afterAll(() => {
  pair?.remove();
  if (cacheRoot) rmSync(cacheRoot, { recursive: true, force: true });
});

async function logProbs(session: CausalLmSession): Promise<Float32Array> {
  const [result] = await session.step([{ cache: session.newCache(), tokens: PROMPT }]);
  return result.logProbs;
}

/** Opens the expert through the cache in `cacheDir`; returns its log-probs and the log lines. */
async function openCached(dir: string, cacheDir: string): Promise<{ logProbs: Float32Array; lines: string[] }> {
  const lines: string[] = [];
  const opened = await openModelSession("expert", dir, { executionProvider: "cpu", log: (l) => lines.push(l) }, { prepackCacheDir: cacheDir });
  try {
    return { logProbs: await logProbs(opened.session), lines };
  } finally {
    await opened.session.release();
  }
}

async function uncachedLogProbs(dir: string): Promise<Float32Array> {
  const opened = await openModelSession("expert", dir, { executionProvider: "cpu" });
  try {
    return await logProbs(opened.session);
  } finally {
    await opened.session.release();
  }
}

const entries = (cacheDir: string) => readdirSync(cacheDir).sort();

describe("prepack cache", () => {
  it("writes one whole entry, maps it on the next open, and serves the same log-probs", async () => {
    const cacheDir = join(cacheRoot, "reuse");
    const reference = await uncachedLogProbs(pair.expertDir);
    const first = await openCached(pair.expertDir, cacheDir);
    expect(first.lines.some((l) => /^expert: prepack cache entry .* written in \d+ ms$/.test(l))).toBe(true);
    expect(entries(cacheDir)).toHaveLength(1);
    expect(entries(cacheDir)[0]).toMatch(/^[0-9a-f]{32}$/);
    expect(readdirSync(join(cacheDir, entries(cacheDir)[0])).sort()).toEqual(["model.onnx", "model.onnx.data"]);
    const second = await openCached(pair.expertDir, cacheDir);
    expect(second.lines.some((l) => l.includes("written"))).toBe(false);
    expect(second.lines.some((l) => l.startsWith("expert: prepacked weights mapped from"))).toBe(true);
    expect(maxAbsDiff(first.logProbs, reference)).toBeLessThanOrEqual(1e-6);
    expect(maxAbsDiff(second.logProbs, reference)).toBeLessThanOrEqual(1e-6);
  });

  it("a changed model gets a new entry and its own log-probs, never the stale entry's", async () => {
    const changing = writeTinyPair();
    const cacheDir = join(cacheRoot, "invalidation");
    try {
      const before = await openCached(changing.expertDir, cacheDir);
      // Same shapes and file names, other weights: only the content differs.
      initModel({ configJson: EXPERT_CONFIG, seed: 99, outDir: changing.expertDir });
      const reference = await uncachedLogProbs(changing.expertDir);
      const after = await openCached(changing.expertDir, cacheDir);
      expect(after.lines.some((l) => l.includes("written"))).toBe(true);
      expect(entries(cacheDir)).toHaveLength(2);
      expect(maxAbsDiff(before.logProbs, reference)).toBeGreaterThan(1e-3);
      expect(maxAbsDiff(after.logProbs, reference)).toBeLessThanOrEqual(1e-6);
    } finally {
      changing.remove();
    }
  });

  it("an entry that cannot be opened is logged, removed and rebuilt", async () => {
    const cacheDir = join(cacheRoot, "corrupt");
    const reference = await uncachedLogProbs(pair.expertDir);
    await openCached(pair.expertDir, cacheDir);
    const [entry] = entries(cacheDir);
    writeFileSync(join(cacheDir, entry, "model.onnx"), "not an onnx model");
    const reopened = await openCached(pair.expertDir, cacheDir);
    expect(reopened.lines.some((l) => /cannot be opened .*removing and rebuilding it/.test(l))).toBe(true);
    expect(reopened.lines.some((l) => l.includes("written"))).toBe(true);
    expect(entries(cacheDir)).toEqual([entry]);
    expect(maxAbsDiff(reopened.logProbs, reference)).toBeLessThanOrEqual(1e-6);
  });

  it("a cache directory that cannot be written leaves the session prepacked in memory", async () => {
    const notADirectory = join(cacheRoot, "a-file");
    writeFileSync(notADirectory, "");
    const reference = await uncachedLogProbs(pair.expertDir);
    const opened = await openCached(pair.expertDir, join(notADirectory, "cache"));
    expect(opened.lines.some((l) => /not written \(.*\); prepacking in memory/.test(l))).toBe(true);
    expect(maxAbsDiff(opened.logProbs, reference)).toBeLessThanOrEqual(1e-6);
  });

  it("is not used without prepacking, and says why", async () => {
    const lines: string[] = [];
    const opened = await openModelSession("expert", pair.expertDir, { executionProvider: "cpu", prepack: false, log: (l) => lines.push(l) }, { prepackCacheDir: join(cacheRoot, "unused") });
    await opened.session.release();
    expect(lines).toContain("expert: prepack cache not used: prepacking is off");
    expect(readdirSync(cacheRoot)).not.toContain("unused");
  });
});
