// How the scheduler splits the sequences that prefill in one tick: consecutive groups under a
// token budget, in order, a prompt longer than the budget alone (where the graphs cannot read
// it in chunks).
import { describe, expect, it } from "vitest";
import { groupByTokens } from "./scheduler.ts";

describe("prefill batches under a token budget", () => {
  it("keeps the order and closes a group before it would pass the budget", () => {
    const prompts = [300, 200, 100, 400, 112, 600, 5];
    const groups = groupByTokens(prompts, (n) => n, 512);
    expect(groups).toEqual([[300, 200], [100, 400], [112], [600], [5]]);
    expect(groups.flat()).toEqual(prompts);
  });

  it("gives nothing for nothing, and one group when everything fits", () => {
    expect(groupByTokens([], (n: number) => n, 512)).toEqual([]);
    expect(groupByTokens([64, 64, 64], (n) => n, 512)).toEqual([[64, 64, 64]]);
  });
});
