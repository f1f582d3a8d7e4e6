// The spec rules: shape errors name the field, the test split is the frozen default's alone
// (and only with the default settings), and rows expand into rounds in table order.
import { describe, expect, it } from "vitest";
import { plannedRuns } from "./runner.ts";
import { DEFAULT_SETTINGS, parseSpec, specPath } from "./spec.ts";

const validation = { train: { seed: 2, split: "train" }, eval: { seed: 1, split: "validation" } };
const spec = (over: Record<string, unknown> = {}) => ({ title: "t", order: 1, problems: validation, rows: [{ id: "a", label: "A", seeds: [0] }], ...over });
const errorOf = (json: unknown) => {
  try {
    parseSpec(json, "x.json");
  } catch (err) {
    return (err as Error).message;
  }
  return "no error";
};

describe("experiment specs", () => {
  it("fills in defaults and expands variants x seeds in order, settings layered spec < row < variant", () => {
    const parsed = parseSpec(
      spec({
        settings: { mode: "offline", alpha: 0.2 },
        rows: [
          { id: "a", label: "A", settings: { lr: 3e-4 }, variants: [{ alpha: 0.1 }, { lr: 1e-3 }], seeds: [0, 1] },
          { id: "b", label: "B", seeds: [5] },
        ],
      }),
      "/somewhere/alpha.json",
    );
    expect(parsed.name).toBe("alpha");
    expect(parsed.frozenDefault).toBe(false);
    expect(parsed.problems.train.offset).toBe(0);
    expect(parsed.models).toEqual({ expert: "models/expert", amateur: "models/amateur" });
    const runs = plannedRuns(parsed);
    expect(runs.map((r) => [r.row.id, r.variant, r.seed])).toEqual([
      ["a", 0, 0],
      ["a", 0, 1],
      ["a", 1, 0],
      ["a", 1, 1],
      ["b", 0, 5],
    ]);
    expect(runs[0].settings).toEqual({ ...DEFAULT_SETTINGS, mode: "offline", alpha: 0.1, lr: 3e-4 });
    expect(runs[2].settings).toEqual({ ...DEFAULT_SETTINGS, mode: "offline", alpha: 0.2, lr: 1e-3 });
    expect(plannedRuns(parsed, ["b"]).map((r) => r.seed)).toEqual([5]);
    expect(plannedRuns(parsed, [], [1]).map((r) => [r.row.id, r.variant])).toEqual([
      ["a", 0],
      ["a", 1],
    ]);
    expect(() => plannedRuns(parsed, ["c"])).toThrow(/alpha has no row c \(its rows: a, b\)/);
  });

  it("names the field of a malformed spec", () => {
    expect(errorOf(spec({ settings: { alpha: 0 } }))).toMatch(/^x\.json: settings\.alpha: /);
    expect(errorOf(spec({ settings: { learningRate: 1 } }))).toMatch(/^x\.json: settings: .*learningRate/);
    expect(errorOf(spec({ rows: [{ id: "A b", label: "A", seeds: [0] }] }))).toMatch(/rows\.0\.id: must be lower-case/);
    expect(errorOf(spec({ rows: [{ id: "a", label: "A", seeds: [] }] }))).toMatch(/rows\.0\.seeds/);
    expect(errorOf(spec({ rows: [{ id: "a", label: "A", seeds: [1, 1] }] }))).toBe("x.json: rows.0.seeds: lists a seed twice");
    expect(errorOf(spec({ rows: [{ id: "a", label: "A", seeds: [0] }, { id: "a", label: "B", seeds: [0] }] }))).toBe('x.json: rows.1.id: "a" is used by an earlier row');
    expect(errorOf(spec({ problems: { ...validation, train: { seed: 2, split: "validation" } } }))).toMatch(/problems\.train\.split: must be "train"/);
    expect(errorOf(spec({ problems: { ...validation, eval: { seed: 1, split: "train" } } }))).toMatch(/problems\.eval\.split: must be held out/);
    // A row can only show what its rounds measure.
    expect(errorOf(spec({ settings: { sft: false }, rows: [{ id: "a", label: "A", measure: "sft", seeds: [0] }] }))).toMatch(/rows\.0\.measure: "sft" needs the SFT baseline/);
    expect(errorOf(spec({ rows: [{ id: "a", label: "A", measure: "lead-at-tokens", variants: [{ sftMatched: ["tokens"] }, {}], seeds: [0] }] }))).toMatch(/rows\.0\.measure: "lead-at-tokens" needs "sftMatched" to include "tokens"/);
    expect(errorOf(spec({ rows: [{ id: "a", label: "A", measure: "sft-at-time", settings: { sftMatched: ["time"] }, seeds: [0] }] }))).toBe("no error");
    expect(errorOf(spec({ settings: { sftMatched: ["time", "time"] } }))).toMatch(/settings\.sftMatched: lists a budget twice/);
  });

  it("refuses the test split unless the spec is the frozen default with the default settings", () => {
    const test = { ...validation, eval: { seed: 1, split: "test" } };
    expect(errorOf(spec({ problems: test }))).toMatch(/problems\.eval\.split: the test split is read once, by the frozen default/);
    expect(errorOf(spec({ problems: test, frozenDefault: true }))).toBe("no error");
    // Setting a value equal to the default is still the default.
    expect(errorOf(spec({ problems: test, frozenDefault: true, settings: { alpha: DEFAULT_SETTINGS.alpha } }))).toBe("no error");
    expect(errorOf(spec({ problems: test, frozenDefault: true, settings: { alpha: 0.2 } }))).toMatch(/rows\.0: a frozen default reads the test split with the default settings only, but changes alpha/);
    expect(errorOf(spec({ problems: test, frozenDefault: true, rows: [{ id: "a", label: "A", seeds: [0], variants: [{}, { mode: "offline" }] }] }))).toMatch(/but variant 1 changes mode/);
    expect(errorOf(spec({ frozenDefault: true }))).toMatch(/^x\.json: frozenDefault: /);
    expect(errorOf(spec({ problems: test, frozenDefault: true, models: { expert: "elsewhere" } }))).toBe("x.json: models: a frozen default uses the built-in pair");
  });

  it("finds a spec by name under experiments/ or takes a path", () => {
    expect(specPath("alpha-and-rate", "/repo")).toBe("/repo/experiments/alpha-and-rate.json");
    expect(specPath("/tmp/mine.json", "/repo")).toBe("/tmp/mine.json");
    expect(() => specPath("../etc/passwd", "/repo")).toThrow(/neither a \.json file nor a spec name/);
  });
});
