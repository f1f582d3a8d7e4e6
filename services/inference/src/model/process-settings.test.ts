import { describe, expect, it } from "vitest";
import { RECOMMENDED_GLIBC_TUNABLES, RECOMMENDED_NODE_FLAGS, largeBuffersReused, missingProcessSettings, recommendedNodeFlagsIn } from "./process-settings.ts";

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

describe("missingProcessSettings", () => {
  const tuned = { GLIBC_TUNABLES: RECOMMENDED_GLIBC_TUNABLES };
  it("names nothing when the process started with every recommended setting", () => {
    expect(missingProcessSettings("linux", tuned, ["--single-threaded-gc"])).toEqual([]);
  });

  it("names the glibc tunables (on Linux only) and the Node flags it lacks, with why", () => {
    const missing = missingProcessSettings("linux", {}, ["--import", "tsx"]);
    expect(missing.map((m) => m.recommended)).toEqual([`GLIBC_TUNABLES=${RECOMMENDED_GLIBC_TUNABLES}`, `node ${RECOMMENDED_NODE_FLAGS.join(" ")} bin/lightreasoner.mjs ...`]);
    expect(missing.every((m) => m.why.length > 0)).toBe(true);
    expect(missingProcessSettings("darwin", {}, ["--single-threaded-gc"])).toEqual([]);
  });
});
