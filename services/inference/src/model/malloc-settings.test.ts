import { describe, expect, it } from "vitest";
import { RECOMMENDED_GLIBC_TUNABLES, largeBuffersReused } from "./malloc-settings.ts";

describe("largeBuffersReused", () => {
  it("is true only when GLIBC_TUNABLES raises the mmap threshold", () => {
    expect(largeBuffersReused({ GLIBC_TUNABLES: RECOMMENDED_GLIBC_TUNABLES })).toBe(true);
    expect(largeBuffersReused({})).toBe(false);
    expect(largeBuffersReused({ GLIBC_TUNABLES: "glibc.malloc.trim_threshold=2147483648" })).toBe(false);
  });
});
