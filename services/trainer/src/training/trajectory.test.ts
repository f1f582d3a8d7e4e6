import { describe, expect, it } from "vitest";
import { TrajectoryError } from "./errors.ts";
import type { Trajectory } from "./trajectory.ts";
import { checkTrajectory, everyTokenTargets } from "./trajectory.ts";

const good: Trajectory = { tokenIds: [1, 2, 3, 4], promptLength: 2, targets: [{ position: 3, ids: [3, 9], weights: [0.7, 0.3] }, { position: 4, ids: [5], weights: [1] }] };

function fieldOf(t: unknown): string {
  try {
    checkTrajectory(t as Trajectory, 10, "trajectories[7]");
  } catch (err) {
    expect(err).toBeInstanceOf(TrajectoryError);
    return `${(err as TrajectoryError).field} -- ${(err as TrajectoryError).problem}`;
  }
  return "ok";
}

describe("checkTrajectory", () => {
  it("accepts a well-formed trajectory, including a label after the last token", () => {
    expect(fieldOf(good)).toBe("ok");
  });

  it("names the malformed field", () => {
    expect(fieldOf({ ...good, tokenIds: [] })).toMatch(/^trajectories\[7\]\.tokenIds -- must be a non-empty/);
    expect(fieldOf({ ...good, tokenIds: [1, 2, 10, 4] })).toMatch(/^trajectories\[7\]\.tokenIds\[2\] -- is 10; expected a token id in \[0, 10\)/);
    expect(fieldOf({ ...good, promptLength: 5 })).toMatch(/^trajectories\[7\]\.promptLength -- is 5; expected an integer in \[0, 4\]/);
    expect(fieldOf({ ...good, targets: [{ position: 0, ids: [1], weights: [1] }] })).toMatch(/targets\[0\]\.position -- is 0; expected an integer in \[1, 4\]/);
    expect(fieldOf({ ...good, targets: [{ position: 5, ids: [1], weights: [1] }] })).toMatch(/targets\[0\]\.position -- is 5/);
    expect(fieldOf({ ...good, targets: [good.targets[0], good.targets[0]] })).toMatch(/targets\[1\]\.position -- 3 is labelled twice/);
    expect(fieldOf({ ...good, targets: [{ position: 3, ids: [], weights: [] }] })).toMatch(/targets\[0\]\.ids -- must list at least one/);
    expect(fieldOf({ ...good, targets: [{ position: 3, ids: [1, 2], weights: [1] }] })).toMatch(/targets\[0\]\.weights -- must have one weight per id \(2\), got 1/);
    expect(fieldOf({ ...good, targets: [{ position: 3, ids: [1, 1], weights: [0.5, 0.5] }] })).toMatch(/targets\[0\]\.ids\[1\] -- token 1 appears twice/);
    expect(fieldOf({ ...good, targets: [{ position: 3, ids: [1, 12], weights: [0.5, 0.5] }] })).toMatch(/targets\[0\]\.ids\[1\] -- is 12/);
    expect(fieldOf({ ...good, targets: [{ position: 3, ids: [1, 2], weights: [1.5, -0.5] }] })).toMatch(/targets\[0\]\.weights\[1\] -- is -0.5; expected a finite probability/);
    expect(fieldOf({ ...good, targets: [{ position: 3, ids: [1, 2], weights: [0.5, 0.4] }] })).toMatch(/targets\[0\]\.weights -- sum to 0.9; a soft label must sum to 1/);
  });
});

describe("everyTokenTargets", () => {
  it("labels every token from `from` on (never position 0, which nothing predicts) with itself", () => {
    expect(everyTokenTargets([7, 8, 9], 0)).toEqual([{ position: 1, ids: [8], weights: [1] }, { position: 2, ids: [9], weights: [1] }]);
    expect(everyTokenTargets([7, 8, 9], 2)).toEqual([{ position: 2, ids: [9], weights: [1] }]);
    expect(everyTokenTargets([7, 8, 9], 3)).toEqual([]);
  });
});
