// The cache key and the cache's life: keys are sha256 of one canonical text (checked against
// sha256sum of the text written out by hand), a round is found only once its record is
// written, and what an interrupted round left is cleared before it runs again.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { RunInputs } from "./results.ts";
import { ResultCache, canonicalJson, runKey, sha256OfFile } from "./results.ts";

const inputs: RunInputs = {
  settings: { sft: false, seed: 0, mode: "offline", alpha: 0.7 },
  problems: { train: "t1", eval: "v1" },
  models: { expert: "e1", amateur: "a1" },
};

describe("result keys", () => {
  it("are the sha256 of the inputs' canonical JSON: keys sorted at every level, no spaces", () => {
    expect(canonicalJson({ b: [2, { d: 1, c: "x" }], a: true, skipped: undefined })).toBe('{"a":true,"b":[2,{"c":"x","d":1}]}');
    // printf '%s' '{"keyVersion":1,"models":{"amateur":"a1","expert":"e1"},"problems":{"eval":"v1","train":"t1"},"settings":{"alpha":0.7,"mode":"offline","seed":0,"sft":false}}' | sha256sum
    expect(runKey(inputs)).toBe("1435af258e487a1a08bca0057185d8176354c9cc37199e8223809c771804b766");
  });

  it("change with any input and not with the order of keys", () => {
    const reordered: RunInputs = { models: { amateur: "a1", expert: "e1" }, settings: { alpha: 0.7, mode: "offline", seed: 0, sft: false }, problems: { eval: "v1", train: "t1" } };
    expect(runKey(reordered)).toBe(runKey(inputs));
    const keys = new Set([
      runKey(inputs),
      runKey({ ...inputs, settings: { ...inputs.settings, seed: 1 } }),
      runKey({ ...inputs, models: { ...inputs.models, amateur: "a2" } }),
      runKey({ ...inputs, problems: { ...inputs.problems, eval: "v2" } }),
    ]);
    expect(keys.size).toBe(4);
    expect(() => canonicalJson({ x: Number.NaN })).toThrow(/non-finite/);
  });
});

describe("the result cache", () => {
  const dir = mkdtempSync(join(tmpdir(), "lr-results-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("finds a round only after finish, and begin clears an interrupted one", () => {
    const cache = new ResultCache(dir);
    const key = runKey(inputs);
    expect(cache.runDir(key)).toBe(join(dir, "1435af258e487a1a"));
    expect(cache.find(key)).toBeNull();
    const runDir = cache.begin(key);
    writeFileSync(join(runDir, "leftover.txt"), "from an interrupted attempt");
    const record = { key, spec: "s", row: "r", variant: 0, seed: 0, inputs, command: "lightreasoner run", finishedAt: "2026-01-01T00:00:00Z", wallSeconds: 1 };
    expect(() => cache.finish(record)).toThrow(/has no report\.json; the run did not finish/);
    expect(cache.find(key)).toBeNull();
    expect(cache.begin(key)).toBe(runDir);
    expect(existsSync(join(runDir, "leftover.txt"))).toBe(false);
    writeFileSync(join(runDir, "report.json"), JSON.stringify({ evalProblems: 7 }));
    cache.finish(record);
    const found = cache.find(key)!;
    expect(found.record).toEqual(record);
    expect(found.report.evalProblems).toBe(7);
    // Another key sharing the first 64 bits is not taken for this one.
    expect(() => cache.find(`${key.slice(0, 16)}${"0".repeat(48)}`)).toThrow(/two keys share 64 bits/);
  });

  it("hashes a problems file's bytes", () => {
    const file = join(dir, "p.jsonl");
    writeFileSync(file, "line one\n");
    // printf 'line one\n' | sha256sum
    expect(sha256OfFile(file)).toBe("31f21b1dae81d3f32f40e38134bc688e6f7df4f08dde1d7d2cda3c4b59104e1c");
    expect(readFileSync(file, "utf8")).toBe("line one\n");
  });
});
