import { describe, expect, it } from "vitest";
import { RECOMMENDED_GLIBC_TUNABLES, RECOMMENDED_NODE_FLAGS, largeBuffersReused, recommendedNodeFlagsIn } from "./process-settings.ts";

describe("largeBuffersReused", () => {
  it("is true only when GLIBC_TUNABLES raises the mmap threshold", () => {
    expect(largeBuffersReused({ GLIBC_TUNABLES: RECOMMENDED_GLIBC_TUNABLES })).toBe(true);
    expect(largeBuffersReused({})).toBe(false);
    expect(largeBuffersReused({ GLIBC_TUNABLES: "glibc.malloc.trim_threshold=2147483648" })).toBe(false);
  });
});

describe("recommendedNodeFlagsIn", () => {
  it("keeps the recommended flags a command line holds, and nothing else", () => {
    expect(recommendedNodeFlagsIn(["--import", "tsx", "--single-threaded-gc", "--max-old-space-size=512"])).toEqual(["--single-threaded-gc"]);
    expect(recommendedNodeFlagsIn(["--import", "tsx"])).toEqual([]);
    expect(recommendedNodeFlagsIn([...RECOMMENDED_NODE_FLAGS])).toEqual([...RECOMMENDED_NODE_FLAGS]);
  });
});
