import { describe, expect, it } from "vitest";
import type { MicroBatch } from "./batching.ts";
import { epochOrder, microBatches, START } from "./batching.ts";
import { crossEntropyObjective, lightReasonerObjective } from "./objective.ts";
import { forwardInputs } from "./training-loop.ts";
import { asStream, randomTrajectories } from "./testing/trajectories.ts";

const data = randomTrajectories(10, 64, 3);
const totalTargets = data.reduce((n, t) => n + t.targets.length, 0);
const options = { objective: lightReasonerObjective, batchSize: 4, vocabSize: 64, seed: 1, shuffle: true };

async function take(source: AsyncGenerator<MicroBatch>, n: number): Promise<MicroBatch[]> {
  const out: MicroBatch[] = [];
  for await (const b of source) {
    out.push(b);
    if (out.length === n) break;
  }
  return out;
}

const key = (b: MicroBatch) => b.chunks.map((c) => `${data.indexOf(c.trajectory)}:${c.targets.map((t) => t.position).join(",")}`).join(" ");

describe("microBatches", () => {
  it("fills each micro-batch with exactly batchSize selected steps, splitting trajectories between them", async () => {
    expect(data.some((t) => t.targets.length === 0)).toBe(true); // nothing to train on: skipped
    const batches = await take(microBatches(data, START, options), Math.ceil((2 * totalTargets) / 4));
    expect(batches.every((b) => b.units === 4 && b.chunks.reduce((n, c) => n + c.targets.length, 0) === 4)).toBe(true);
    // Two epochs' worth: the first totalTargets samples are every selected step exactly once.
    const inOrder = batches.flatMap((b) => b.chunks.flatMap((c) => c.targets));
    expect(new Set(inOrder.slice(0, totalTargets)).size).toBe(totalTargets);
    expect(new Set(inOrder.slice(totalTargets)).size).toBe(totalTargets);
    expect(batches[batches.length - 1].cursor.epoch).toBe(1);
    expect(batches.some((b) => b.cursor.targetOffset > 0)).toBe(true); // some trajectory was split
  });

  it("resumes from any cursor with the micro-batches that followed it", async () => {
    const straight = await take(microBatches(data, START, options), 12);
    for (const at of [1, 4, 7]) {
      const resumed = await take(microBatches(data, straight[at - 1].cursor, options), 12 - at);
      expect(resumed.map(key)).toEqual(straight.slice(at).map(key));
    }
    const stream = await take(microBatches(asStream(data), START, options), 100);
    const resumedStream = await take(microBatches(asStream(data), stream[2].cursor, options), 100);
    expect(resumedStream.map(key)).toEqual(stream.slice(3).map(key));
  });

  it("a stream is read once, ending with a short micro-batch", async () => {
    const batches = await take(microBatches(asStream(data), START, options), 100);
    expect(batches.reduce((n, b) => n + b.units, 0)).toBe(totalTargets);
    expect(batches[batches.length - 1].units).toBe(totalTargets % 4 || 4);
    // Arrival order, no shuffling.
    const order = batches.flatMap((b) => b.chunks.map((c) => c.trajectory)).filter((t, i, all) => all.indexOf(t) === i);
    expect(order).toEqual(data.filter((t) => t.targets.length > 0));
  });

  it("SFT batches whole trajectories", async () => {
    const sft = { ...options, objective: crossEntropyObjective({ completionOnly: true }), batchSize: 3 };
    const [first] = await take(microBatches(data, START, sft), 1);
    expect(first.units).toBe(3);
    expect(first.chunks.length).toBe(3);
    for (const c of first.chunks) expect(c.targets.length).toBe(c.trajectory.tokenIds.length - c.trajectory.promptLength);
  });

  it("forwardInputs pads to the longest row and reads the logits before each label", () => {
    const t = data.find((x) => x.targets.length >= 2)!;
    const short = { tokenIds: [5, 6, 7], promptLength: 1, targets: [{ position: 2, ids: [7], weights: [1] }] };
    const inputs = forwardInputs({ chunks: [{ trajectory: t, targets: t.targets }, { trajectory: short, targets: short.targets }], units: 0, cursor: START });
    const last = Math.max(...t.targets.map((x) => x.position));
    expect(inputs.rows[0]).toEqual(t.tokenIds.slice(0, last));
    expect(inputs.rows[1]).toEqual([5, 6, ...Array(last - 2).fill(0)]);
    expect(inputs.positions).toEqual([...t.targets.map((x) => [0, x.position - 1]), [1, 1]]);
    expect(inputs.realTokens).toBe(last + 2);
  });
});

describe("epochOrder", () => {
  const lengths = Array.from({ length: 200 }, (_, i) => 10 + ((i * 37) % 90));
  it("is a seeded permutation, different each epoch and for each seed", () => {
    const a = epochOrder(lengths, 0, { seed: 1, shuffle: true, batchSize: 8 });
    expect([...a].sort((x, y) => x - y)).toEqual(lengths.map((_, i) => i));
    expect(epochOrder(lengths, 0, { seed: 1, shuffle: true, batchSize: 8 })).toEqual(a);
    expect(epochOrder(lengths, 1, { seed: 1, shuffle: true, batchSize: 8 })).not.toEqual(a);
    expect(epochOrder(lengths, 0, { seed: 2, shuffle: true, batchSize: 8 })).not.toEqual(a);
    expect(epochOrder(lengths, 3, { seed: 1, shuffle: false, batchSize: 8 })).toEqual(lengths.map((_, i) => i));
  });

  it("grouping by length cuts the padding of batches", () => {
    const padding = (order: number[]) => {
      let pad = 0;
      for (let b = 0; b < order.length; b += 8) {
        const batch = order.slice(b, b + 8).map((i) => lengths[i]);
        pad += batch.reduce((n, l) => n + Math.max(...batch) - l, 0);
      }
      return pad;
    };
    const grouped = epochOrder(lengths, 0, { seed: 1, shuffle: true, batchSize: 8, lengthGroups: 16 });
    expect([...grouped].sort((x, y) => x - y)).toEqual(lengths.map((_, i) => i));
    expect(padding(grouped)).toBeLessThan(0.3 * padding(epochOrder(lengths, 0, { seed: 1, shuffle: true, batchSize: 8 })));
  });
});
