// Generate's stop-string handling on hand-made token texts, where the edge cases are easy to write down.
import { describe, expect, it } from "vitest";
import { StopStringHoldback } from "./stop-strings.ts";

/** Feeds (id, text) pairs and returns every chunk sent, the finish flush included. */
function run(stops: string[], tokens: [number, string][]) {
  const holdback = new StopStringHoldback(stops);
  const chunks = tokens.map(([id, text]) => holdback.push(id, text)).filter((c) => c !== null);
  const rest = holdback.finish();
  return rest ? [...chunks, rest] : chunks;
}

describe("StopStringHoldback", () => {
  it("passes text straight through when there are no stop strings", () => {
    expect(run([], [[1, "a"], [2, "b"]])).toEqual([{ text: "a", tokenIds: [1] }, { text: "b", tokenIds: [2] }]);
  });

  it("holds back tokens that could begin a stop string and releases them when they do not", () => {
    expect(run(["END"], [[1, "x "], [2, "x E"], [3, "N"], [4, "d"]])).toEqual([
      { text: "x ", tokenIds: [1] },
      { text: "x ENd", tokenIds: [2, 3, 4] },
    ]);
  });

  it("never sends a stop string split over tokens, nor what follows it in the same token", () => {
    expect(run(["END"], [[1, "ok "], [2, "ok E"], [3, "N"], [4, "D and more"]])).toEqual([
      { text: "ok ", tokenIds: [1] },
      { text: "ok ", tokenIds: [2, 3, 4] },
    ]);
  });

  it("cuts at the earliest of several stop strings", () => {
    expect(run(["\n\n", "##"], [[1, "a##b\n\nc"]])).toEqual([{ text: "a", tokenIds: [1] }]);
  });

  it("releases held-back text at the end when no stop string completed", () => {
    expect(run(["END"], [[1, "the E"]])).toEqual([{ text: "the E", tokenIds: [1] }]);
  });

  it("reports a final token with no text (an EOS) in the last chunk", () => {
    expect(run([], [[1, "a"], [0, ""]])).toEqual([{ text: "a", tokenIds: [1] }, { text: "", tokenIds: [0] }]);
  });
});
