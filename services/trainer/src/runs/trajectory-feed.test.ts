import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { SampleStore } from "#trainer/store/sample-store.ts";
import { recordTrajectory, STORE_FORMAT_VERSION } from "#trainer/store/records.ts";
import type { TrajectoryRecord } from "#trainer/store/records.ts";
import { TrajectoryFeed } from "./trajectory-feed.ts";

const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

function openStore(): SampleStore {
  const dir = mkdtempSync(join(tmpdir(), "feed-"));
  dirs.push(dir);
  return SampleStore.open(join(dir, "samples.jsonl"), { settings: { test: true } });
}

/** A record whose trajectory has `selected` selected steps (0: none, so no training unit). */
function record(id: string, selected = 1): TrajectoryRecord {
  return {
    v: STORE_FORMAT_VERSION,
    kind: "trajectory",
    problemId: id,
    question: id,
    promptTokenIds: [1, 2],
    completionTokenIds: [3, 4, 5],
    completionText: "x",
    adapterVersion: "",
    finishReason: "eos",
    seed: 1,
    attempts: 1,
    stepsSeen: 3,
    stepKls: [0.1, 0.9, 0.2],
    selected: Array.from({ length: selected }, (_, i) => ({ step: i, kl: 0.9, ids: [7], weights: [1] })),
    answer: { predicted: null, reference: null, correct: null },
  };
}

async function take<T>(iterator: AsyncIterator<T>, n: number): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < n; i++) {
    const next = await iterator.next();
    if (next.done) break;
    out.push(next.value);
  }
  return out;
}

const ids = (items: { problemId: string }[]) => items.map((t) => t.problemId);

describe("TrajectoryFeed", () => {
  it("gives stored trajectories, then new ones as they are stored, then seeded passes over all of them", async () => {
    const store = openStore();
    store.append(record("a"));
    store.append(record("skip", 0));
    const feed = new TrajectoryFeed(store, recordTrajectory, 3, ["a", "skip", "b", "c"]);
    const it = feed[Symbol.asyncIterator]();
    expect(ids(await take(it, 1))).toEqual(["a"]);
    const waiting = take(it, 2);
    store.append(record("b"));
    store.append(record("c"));
    expect(ids(await waiting)).toEqual(["b", "c"]);
    feed.finishSampling();
    const passes = ids(await take(it, 9));
    // Three more passes, each a permutation of every trajectory.
    for (let p = 0; p < 3; p++) expect([...passes.slice(3 * p, 3 * p + 3)].sort()).toEqual(["a", "b", "c"]);
    store.close();
  });

  it("hands problems over in the run's list order, whatever order they finish in", async () => {
    const store = openStore();
    store.append(record("imported")); // not in the list: goes first
    store.append(record("c"));
    const feed = new TrajectoryFeed(store, recordTrajectory, 1, ["a", "b", "c", "d", "e"]);
    const it = feed[Symbol.asyncIterator]();
    expect(ids(await take(it, 1))).toEqual(["imported"]);
    const waiting = take(it, 3);
    store.append(record("b"));
    expect(feed.size).toBe(1); // b waits for a
    store.append(record("a"));
    expect(ids(await waiting)).toEqual(["a", "b", "c"]);
    // sampling stops before d: e, stored, still comes after the gap
    store.append(record("e"));
    feed.finishSampling();
    expect(ids(await take(it, 1))).toEqual(["e"]);
    store.close();
  });

  it("reads the same sequence again from the same store and seed (what a resumed run relies on)", async () => {
    const store = openStore();
    for (const id of ["p", "q", "r", "s"]) store.append(record(id));
    const read = async (seed: number) => {
      const feed = new TrajectoryFeed(store, recordTrajectory, seed, ["p", "q", "r", "s"]);
      feed.finishSampling();
      return ids(await take(feed[Symbol.asyncIterator](), 12));
    };
    const first = await read(5);
    expect(await read(5)).toEqual(first);
    expect(first.slice(0, 4)).toEqual(["p", "q", "r", "s"]);
    expect(await read(6)).not.toEqual(first);
    store.close();
  });

  it("ends when sampling stored nothing to train on, instead of spinning", async () => {
    const store = openStore();
    store.append(record("none", 0));
    const feed = new TrajectoryFeed(store, recordTrajectory, 1, ["none"]);
    feed.finishSampling();
    expect(await take(feed[Symbol.asyncIterator](), 5)).toEqual([]);
    store.close();
  });

  it("hands a sampling failure to the reader", async () => {
    const store = openStore();
    const feed = new TrajectoryFeed(store, recordTrajectory, 1, ["a"]);
    const it = feed[Symbol.asyncIterator]();
    const next = it.next();
    feed.fail(new Error("endpoints gone"));
    await expect(next).rejects.toThrow("endpoints gone");
    store.close();
  });
});
