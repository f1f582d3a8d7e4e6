import { describe, expect, it } from "vitest";
import type { MicroBatch } from "./batching.ts";
import { cutToBudget, labelsIn } from "./token-budget.ts";

const trajectory = { tokenIds: [1, 2, 3, 4, 5, 6], promptLength: 1, targets: [] };
const targets = (n: number) => Array.from({ length: n }, (_, i) => ({ position: i + 1, ids: [i], weights: [1] }));
const cursor = { epoch: 0, index: 0, targetOffset: 0 };
// A: two trajectories (3 and 2 labels) counted as trajectories; B: one trajectory of 4 labels counted as labels.
const a: MicroBatch = { chunks: [{ trajectory, targets: targets(3) }, { trajectory, targets: targets(2) }], units: 2, cursor };
const b: MicroBatch = { chunks: [{ trajectory, targets: targets(4) }], units: 4, cursor };
const shape = (micro: MicroBatch[]) => micro.map((m) => ({ labels: m.chunks.map((c) => c.targets.length), units: m.units }));

describe("cutToBudget", () => {
  it("keeps the first labels that fit, in batch order, and counts units the way each micro-batch does", () => {
    expect(labelsIn([a, b])).toBe(9);
    expect(shape(cutToBudget([a, b], 9))).toEqual([{ labels: [3, 2], units: 2 }, { labels: [4], units: 4 }]);
    expect(shape(cutToBudget([a, b], 100))).toEqual([{ labels: [3, 2], units: 2 }, { labels: [4], units: 4 }]);
    expect(shape(cutToBudget([a, b], 6))).toEqual([{ labels: [3, 2], units: 2 }, { labels: [1], units: 1 }]);
    expect(shape(cutToBudget([a, b], 5))).toEqual([{ labels: [3, 2], units: 2 }]);
    expect(shape(cutToBudget([a, b], 4))).toEqual([{ labels: [3, 1], units: 2 }]);
    expect(shape(cutToBudget([a, b], 3))).toEqual([{ labels: [3], units: 1 }]);
    expect(shape(cutToBudget([a, b], 1))).toEqual([{ labels: [1], units: 1 }]);
    // The labels kept are the first ones of the trajectory.
    expect(cutToBudget([b], 2)[0].chunks[0].targets.map((t) => t.position)).toEqual([1, 2]);
    expect(() => cutToBudget([a], 0)).toThrow(/whole number >= 1, got 0/);
  });
});
