import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { readRunRecord, runConfigOf, RUN_FILE } from "./run-record.ts";

const scratch = mkdtempSync(join(tmpdir(), "lightreasoner-run-record-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** A version 1 run.json as the trainer wrote it before sampling settings moved into SamplingParams. */
const versionOne = {
  v: 1,
  runId: "old",
  config: {
    problems: { path: "train.jsonl" },
    sampling: { temperature: 0.7, topP: 0.9, maxNewTokens: 64, systemPrompt: "", stopStrings: ["###"], encoding: "DISTRIBUTION_ENCODING_SPARSE", concurrency: 3 },
    seed: 5,
  },
  state: "failed",
  stage: "sampling",
};

describe("run.json records", () => {
  it("reads a version 1 record with its sampling settings moved into sampling.params", () => {
    const dir = mkdtempSync(join(scratch, "run-"));
    writeFileSync(join(dir, RUN_FILE), JSON.stringify(versionOne));
    const record = readRunRecord(dir);
    expect(record.v).toBe(2);
    const sampling = runConfigOf(record).sampling!;
    expect(sampling.params).toMatchObject({ temperature: expect.closeTo(0.7, 6), topP: expect.closeTo(0.9, 6), maxNewTokens: 64, stopStrings: ["###"] });
    expect(sampling).toMatchObject({ systemPrompt: "", concurrency: 3 });
  });

  it("refuses a record of an unknown version", () => {
    const dir = mkdtempSync(join(scratch, "run-"));
    writeFileSync(join(dir, RUN_FILE), JSON.stringify({ ...versionOne, v: 9 }));
    expect(() => readRunRecord(dir)).toThrow(/not a version 2 run record/);
  });
});
