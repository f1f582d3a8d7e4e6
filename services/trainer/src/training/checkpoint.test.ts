import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CheckpointError, TrainingConfigError } from "./errors.ts";
import type { TrainerState } from "./checkpoint.ts";
import { checkResumable, latestCheckpoint, loadOptimizerState, readTrainerState, saveOptimizerState, TRAINER_STATE_FILE, writeCheckpoint } from "./checkpoint.ts";
import { freshProgress } from "./training-loop.ts";

const scratch = mkdtempSync(join(tmpdir(), "checkpoint-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
const stateAt = (step: number): TrainerState => ({ kind: "lora", objective: "lightreasoner-kl", progress: { ...freshProgress(), step, cursor: { epoch: 1, index: 4, targetOffset: 2 } }, config: { learningRate: 1e-3, seed: 1 } });

describe("checkpoints", () => {
  it("appear whole under their step, the newest `keep` kept, a crashed partial write ignored", () => {
    const root = join(scratch, "a");
    for (const step of [2, 4, 6]) writeCheckpoint(root, stateAt(step), (dir) => writeFileSync(join(dir, "weights.bin"), String(step)), 2);
    expect(readdirSync(root).sort()).toEqual(["checkpoint-000004", "checkpoint-000006"]);
    // A write that died half way: a hidden partial directory, and a checkpoint directory without its state file.
    mkdirSync(join(root, ".checkpoint-000008.partial"));
    mkdirSync(join(root, "checkpoint-000010"));
    expect(latestCheckpoint(root)).toEqual({ dir: join(root, "checkpoint-000006"), step: 6 });
    expect(readTrainerState(join(root, "checkpoint-000006"))).toEqual(stateAt(6));
    // Rewriting the same step replaces it.
    writeCheckpoint(root, stateAt(6), (dir) => writeFileSync(join(dir, "other.bin"), "x"), 2);
    expect(existsSync(join(root, "checkpoint-000006", "other.bin"))).toBe(true);
    expect(existsSync(join(root, "checkpoint-000006", "weights.bin"))).toBe(false);
    expect(latestCheckpoint(join(scratch, "none"))).toBeNull();
  });

  it("a damaged trainer state is a CheckpointError naming the file", () => {
    const dir = join(scratch, "bad");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, TRAINER_STATE_FILE), "{not json");
    expect(() => readTrainerState(dir)).toThrow(CheckpointError);
    expect(() => readTrainerState(dir)).toThrow(/trainer_state.json: cannot read trainer state/);
    writeFileSync(join(dir, TRAINER_STATE_FILE), JSON.stringify({ format: "lightreasoner-trainer-state-v1", kind: "lora", objective: "x", config: {}, progress: { ...freshProgress(), step: -1 } }));
    expect(() => readTrainerState(dir)).toThrow(/"progress" must hold the counters/);
  });

  it("refuses to resume under other settings or another objective; cadence may change", () => {
    const saved = stateAt(3);
    expect(() => checkResumable(saved, { kind: "lora", objective: "lightreasoner-kl", config: { learningRate: 2e-3, seed: 1 } }, [], "ck")).toThrow(TrainingConfigError);
    expect(() => checkResumable(saved, { kind: "lora", objective: "lightreasoner-kl", config: { learningRate: 2e-3, seed: 1 } }, [], "ck")).toThrow(/learningRate: is 0.002, but the checkpoint ck was written with 0.001/);
    expect(() => checkResumable(saved, { kind: "lora", objective: "cross-entropy-completion", config: saved.config }, [], "ck")).toThrow(/objective lightreasoner-kl; this run is lora with cross-entropy-completion/);
    expect(() => checkResumable(saved, { kind: "lora", objective: "lightreasoner-kl", config: { ...saved.config, every: 5 } }, ["every"], "ck")).not.toThrow();
  });

  it("optimizer moments round-trip exactly, with their step", () => {
    const file = join(scratch, "optimizer.safetensors");
    const m = Float32Array.from([0.1, -2e-8, 3.5, Math.PI]);
    const v = Float32Array.from([1e-12, 4, 0, 7]);
    saveOptimizerState(file, { step: 17, moments: new Map([["layers.0.w", { m, v }]]) }, new Map([["layers.0.w", [2, 2]]]));
    const back = loadOptimizerState(file);
    expect(back.step).toBe(17);
    expect(back.moments.get("layers.0.w")).toEqual({ m, v });
    expect(() => loadOptimizerState(join(scratch, "missing.safetensors"))).toThrow(/missing: the checkpoint has no optimizer state/);
  });
});
