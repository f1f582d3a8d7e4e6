import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DuplicateProblemError, SampleFileError, StoreSettingsMismatchError } from "./errors.ts";
import type { TrajectoryRecord } from "./records.ts";
import { SampleStore } from "./sample-store.ts";

/** A hand-made record: prompt [1, 2, 3], completion [10, 11, 12, 13], steps 0 and 2 selected. */
function record(problemId: string, overrides: Partial<TrajectoryRecord> = {}): TrajectoryRecord {
  return {
    v: 1,
    kind: "trajectory",
    problemId,
    question: `question ${problemId}`,
    promptTokenIds: [1, 2, 3],
    completionTokenIds: [10, 11, 12, 13],
    completionText: "a b c #### 7",
    adapterVersion: "",
    finishReason: "eos",
    seed: 42,
    attempts: 1,
    stepsSeen: 4,
    stepKls: [0.9, 0.1, 0.5, 0.2],
    selected: [
      { step: 0, kl: 0.9, ids: [10, 20], weights: [0.75, 0.25] },
      { step: 2, kl: 0.5, ids: [12], weights: [1] },
    ],
    answer: { predicted: 7, reference: 7, correct: true },
    ...overrides,
  };
}

let dir: string;
let path: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "lr-store-"));
  path = join(dir, "nested", "samples.jsonl");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("sample store", () => {
  it("appends one line per problem, flushed, and reads it all back on reopen", () => {
    const store = SampleStore.open(path, { settings: { beta: 0.4, alpha: 0.2, seed: 7 } });
    store.append(record("a"));
    store.append(record("b", { selected: [], answer: { predicted: 3, reference: 7, correct: false } }));
    // On disk already, before close: a header and one line per problem.
    const lines = readFileSync(path, "utf8").trimEnd().split("\n");
    expect(lines).toHaveLength(3);
    expect(JSON.parse(lines[0])).toEqual({ v: 1, kind: "header", settings: { beta: 0.4, alpha: 0.2, seed: 7 } });
    expect(JSON.parse(lines[1])).toEqual(record("a"));
    store.close();

    const again = SampleStore.open(path, { settings: { seed: 7, alpha: 0.2, beta: 0.4 } });
    expect(again.recovery.truncatedBytes).toBe(0);
    expect([...again.doneProblemIds()]).toEqual(["a", "b"]);
    expect(again.all()).toEqual([record("a"), record("b", { selected: [], answer: { predicted: 3, reference: 7, correct: false } })]);
    again.close();
  });

  it("counts problems, steps seen, steps selected, tuned tokens and SFT tokens", () => {
    const store = SampleStore.open(path);
    store.append(record("a"));
    store.append(record("b", { selected: [{ step: 3, kl: 2, ids: [13], weights: [1] }], stepsSeen: 9, answer: { predicted: null, reference: 5, correct: false } }));
    store.append(record("c", { selected: [], answer: { predicted: 1, reference: null, correct: null } }));
    expect(store.counts()).toEqual({ problems: 3, stepsSeen: 17, stepsSelected: 3, tunedTokens: 3, answered: 2, correct: 1, sftTokens: 4 });
    store.close();
  });

  it("cuts a torn last line on reopen, keeps every complete problem, and appends after it", () => {
    const store = SampleStore.open(path, { settings: { seed: 1 } });
    store.append(record("a"));
    store.append(record("b"));
    store.close();
    const clean = statSync(path).size;
    // A crash in the middle of the third append: part of its line, no newline.
    const torn = JSON.stringify(record("c")).slice(0, 57);
    appendFileSync(path, torn);

    const snapshot = SampleStore.read(path);
    expect(snapshot.records.map((r) => r.problemId)).toEqual(["a", "b"]);
    expect(snapshot.tornBytes).toBe(57);
    expect(statSync(path).size).toBe(clean + 57); // reading does not write

    const resumed = SampleStore.open(path, { settings: { seed: 1 } });
    expect(resumed.recovery.truncatedBytes).toBe(57);
    expect(statSync(path).size).toBe(clean);
    expect(resumed.has("c")).toBe(false);
    expect([...resumed.doneProblemIds()]).toEqual(["a", "b"]);
    resumed.append(record("c"));
    resumed.close();
    expect(SampleStore.read(path).records.map((r) => r.problemId)).toEqual(["a", "b", "c"]);
  });

  it("treats a complete line that fails to parse as damage, naming the line", () => {
    const store = SampleStore.open(path, { settings: { seed: 1 } });
    store.append(record("a"));
    store.close();
    appendFileSync(path, "{not json\n");
    appendFileSync(path, `${JSON.stringify(record("b"))}\n`);
    expect(() => SampleStore.open(path)).toThrow(SampleFileError);
    expect(() => SampleStore.open(path)).toThrow(/samples\.jsonl:3: is not valid JSON/);
  });

  it("names the line and field of a record that breaks the format", () => {
    writeFileSync(path.replace("nested/", ""), `${JSON.stringify(record("a"))}\n${JSON.stringify({ ...record("b"), selected: [{ step: 9, kl: 1, ids: [1], weights: [1] }] })}\n`);
    expect(() => SampleStore.open(path.replace("nested/", ""))).toThrow(/samples\.jsonl:2: "selected\.0\.step" 9 is past the completion/);
  });

  it("refuses a problem stored twice, on append and in the file", () => {
    const store = SampleStore.open(path);
    store.append(record("a"));
    expect(() => store.append(record("a"))).toThrow(DuplicateProblemError);
    store.close();
    appendFileSync(path, `${JSON.stringify(record("a"))}\n`);
    expect(() => SampleStore.open(path)).toThrow(/:2: "problemId" a was already stored on line 1/);
  });

  it("refuses a record whose weights do not match its ids before writing anything", () => {
    const store = SampleStore.open(path);
    const size = statSync(path).size;
    expect(() => store.append(record("a", { selected: [{ step: 0, kl: 1, ids: [1, 2], weights: [1] }] }))).toThrow(/"selected\.0\.weights" has 1 entries for 2 ids/);
    expect(statSync(path).size).toBe(size);
    expect(store.has("a")).toBe(false);
    store.close();
  });

  it("refuses to continue a store written with other settings", () => {
    SampleStore.open(path, { settings: { beta: 0.4, seed: 7 } }).close();
    let caught: unknown;
    try {
      SampleStore.open(path, { settings: { beta: 0.5, seed: 7 } });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(StoreSettingsMismatchError);
    expect((caught as StoreSettingsMismatchError).differences).toEqual(["beta: stored 0.4, now 0.5"]);
  });

  it("gives token-exact samples and training trajectories at hand-checked positions", () => {
    const store = SampleStore.open(path);
    store.append(record("a"));
    expect([...store.samples()]).toEqual([
      { problemId: "a", question: "question a", step: 0, position: 3, prefixTokenIds: [1, 2, 3], ids: [10, 20], weights: [0.75, 0.25], kl: 0.9, adapterVersion: "" },
      { problemId: "a", question: "question a", step: 2, position: 5, prefixTokenIds: [1, 2, 3, 10, 11], ids: [12], weights: [1], kl: 0.5, adapterVersion: "" },
    ]);
    // Logits at position - 1 of one forward over tokenIds predict each target.
    expect([...store.trajectories()]).toEqual([
      {
        problemId: "a",
        tokenIds: [1, 2, 3, 10, 11, 12],
        promptLength: 3,
        targets: [
          { position: 3, ids: [10, 20], weights: [0.75, 0.25] },
          { position: 5, ids: [12], weights: [1] },
        ],
        adapterVersion: "",
      },
    ]);
    store.close();
  });

  it("skips problems without selected steps in the trajectory view, and keeps only right answers for SFT", () => {
    const store = SampleStore.open(path);
    store.append(record("none", { selected: [] }));
    store.append(record("wrong", { answer: { predicted: 1, reference: 2, correct: false } }));
    store.append(record("right"));
    expect([...store.trajectories()].map((t) => t.problemId)).toEqual(["wrong", "right"]);
    const sft = [...store.sftTrajectories()];
    expect(sft.map((t) => t.problemId)).toEqual(["none", "right"]);
    expect(sft[0]).toEqual({
      problemId: "none",
      tokenIds: [1, 2, 3, 10, 11, 12, 13],
      promptLength: 3,
      targets: [],
      adapterVersion: "",
    });
    store.close();
  });

  it("tells subscribers about each appended record", () => {
    const store = SampleStore.open(path);
    const seen: string[] = [];
    const stop = store.subscribe((r) => seen.push(r.problemId));
    store.append(record("a"));
    stop();
    store.append(record("b"));
    expect(seen).toEqual(["a"]);
    store.close();
  });
});
