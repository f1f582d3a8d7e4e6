// Resumable checkpoints on disk: `<root>/checkpoint-<step>/` holding whatever the trainer
// saves (a PEFT adapter or model weights), the optimizer's moments as safetensors, and
// trainer_state.json (step, data cursor, counters, the settings). A checkpoint is written
// into a hidden temporary directory and renamed into place, so a crash leaves either the
// whole checkpoint or none of it; the newest complete one is what a run resumes from.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readSafetensors, writeSafetensors } from "#core/formats/safetensors.ts";
import type { Float32Tensor } from "#core/model/weights.ts";
import type { AdamWState, Moments } from "./adamw.ts";
import { CheckpointError, TrainingConfigError } from "./errors.ts";
import type { LoopProgress } from "./training-loop.ts";

export const TRAINER_STATE_FILE = "trainer_state.json";
export const OPTIMIZER_FILE = "optimizer.safetensors";
const STATE_FORMAT = "lightreasoner-trainer-state-v1";
const CHECKPOINT_DIR = /^checkpoint-(\d+)$/;

export interface TrainerState {
  /** What was being trained ("lora" or "full"), and under which objective. */
  kind: string;
  objective: string;
  progress: LoopProgress;
  /** The resolved settings of the run. */
  config: Record<string, unknown>;
  /** Anything else the trainer wants back on resume (e.g. a loss history). */
  extra?: Record<string, unknown>;
}

export const checkpointDirName = (step: number) => `checkpoint-${String(step).padStart(6, "0")}`;

/** The newest complete checkpoint under `root`, or null when there is none (or no root). */
export function latestCheckpoint(root: string): { dir: string; step: number } | null {
  if (!existsSync(root)) return null;
  let best: { dir: string; step: number } | null = null;
  for (const name of readdirSync(root)) {
    const match = CHECKPOINT_DIR.exec(name);
    if (!match || !existsSync(join(root, name, TRAINER_STATE_FILE))) continue;
    const step = Number(match[1]);
    if (!best || step > best.step) best = { dir: join(root, name), step };
  }
  return best;
}

/**
 * Writes checkpoint `step` under `root` through `fill(dir)` plus the trainer state, then
 * renames it into place (replacing one of the same step) and keeps only the newest `keep`.
 */
export function writeCheckpoint(root: string, state: TrainerState, fill: (dir: string) => void, keep: number): string {
  mkdirSync(root, { recursive: true });
  const name = checkpointDirName(state.progress.step);
  const partial = join(root, `.${name}.partial`);
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial);
  fill(partial);
  writeFileSync(join(partial, TRAINER_STATE_FILE), `${JSON.stringify({ format: STATE_FORMAT, ...state }, null, 2)}\n`);
  const final = join(root, name);
  if (existsSync(final)) {
    const old = join(root, `.${name}.old`);
    rmSync(old, { recursive: true, force: true });
    renameSync(final, old);
    renameSync(partial, final);
    rmSync(old, { recursive: true, force: true });
  } else {
    renameSync(partial, final);
  }
  pruneCheckpoints(root, keep);
  return final;
}

function pruneCheckpoints(root: string, keep: number): void {
  const steps = readdirSync(root)
    .map((name) => ({ name, match: CHECKPOINT_DIR.exec(name) }))
    .filter((e) => e.match !== null)
    .sort((a, b) => Number(b.match![1]) - Number(a.match![1]));
  for (const { name } of steps.slice(keep)) rmSync(join(root, name), { recursive: true, force: true });
}

/** Reads and checks a checkpoint's trainer_state.json. */
export function readTrainerState(dir: string): TrainerState {
  const file = join(dir, TRAINER_STATE_FILE);
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new CheckpointError(file, `cannot read trainer state: ${(err as Error).message}`);
  }
  if (json.format !== STATE_FORMAT) throw new CheckpointError(file, `"format" is ${JSON.stringify(json.format)}, expected "${STATE_FORMAT}"`);
  const progress = json.progress as LoopProgress | undefined;
  const counters = ["step", "forwardPasses", "samples", "tunedTokens", "tokens"] as const;
  if (!progress || counters.some((k) => !Number.isInteger(progress[k]) || progress[k] < 0) || typeof progress.trainSeconds !== "number") {
    throw new CheckpointError(file, `"progress" must hold the counters ${counters.join(", ")} and trainSeconds`);
  }
  const c = progress.cursor;
  if (!c || ![c.epoch, c.index, c.targetOffset].every((v) => Number.isInteger(v) && v >= 0)) {
    throw new CheckpointError(file, `"progress.cursor" must hold integers epoch, index, targetOffset >= 0`);
  }
  if (typeof json.kind !== "string" || typeof json.objective !== "string" || typeof json.config !== "object" || json.config === null) {
    throw new CheckpointError(file, `"kind", "objective" and "config" are required`);
  }
  return { kind: json.kind, objective: json.objective, progress, config: json.config as Record<string, unknown>, extra: json.extra as Record<string, unknown> | undefined };
}

/**
 * Refuses to continue a run under settings that would change its result. Settings that only
 * say how often to save or report (`ignored`) may differ.
 */
export function checkResumable(saved: TrainerState, current: { kind: string; objective: string; config: Record<string, unknown> }, ignored: readonly string[], file: string): void {
  if (saved.kind !== current.kind || saved.objective !== current.objective) {
    throw new CheckpointError(file, `was written by a ${saved.kind} run with objective ${saved.objective}; this run is ${current.kind} with ${current.objective}`);
  }
  const keys = new Set([...Object.keys(saved.config), ...Object.keys(current.config)]);
  for (const key of keys) {
    if (ignored.includes(key)) continue;
    const [a, b] = [JSON.stringify(saved.config[key]), JSON.stringify(current.config[key])];
    if (a !== b) {
      throw new TrainingConfigError(key, `is ${b}, but the checkpoint ${file} was written with ${a}; resume with the same settings or use a new checkpoint directory`);
    }
  }
}

/** The optimizer state as safetensors: `<name>.exp_avg`, `<name>.exp_avg_sq` (PyTorch's names), step in the metadata. */
export function saveOptimizerState(file: string, state: AdamWState, shapes: ReadonlyMap<string, readonly number[]>): void {
  const tensors = new Map<string, Float32Tensor>();
  for (const [name, { m, v }] of state.moments) {
    const shape = [...(shapes.get(name) ?? [m.length])];
    tensors.set(`${name}.exp_avg`, { shape, data: m });
    tensors.set(`${name}.exp_avg_sq`, { shape, data: v });
  }
  writeSafetensors(file, tensors, { metadata: { format: "lightreasoner-adamw", step: String(state.step) } });
}

export function loadOptimizerState(file: string): AdamWState {
  if (!existsSync(file)) throw new CheckpointError(file, "missing: the checkpoint has no optimizer state");
  const { tensors, metadata } = readSafetensors(file);
  const step = Number(metadata.step);
  if (!Number.isInteger(step) || step < 0) throw new CheckpointError(file, `metadata "step" is ${JSON.stringify(metadata.step)}, expected an integer >= 0`);
  const moments = new Map<string, Moments>();
  for (const [key, t] of tensors) {
    const match = /^(.*)\.(exp_avg|exp_avg_sq)$/.exec(key);
    if (!match) throw new CheckpointError(file, `unexpected tensor "${key}"`);
    const entry = moments.get(match[1]) ?? { m: new Float32Array(0), v: new Float32Array(0) };
    entry[match[2] === "exp_avg" ? "m" : "v"] = t.data;
    moments.set(match[1], entry);
  }
  for (const [name, { m, v }] of moments) {
    if (m.length === 0 || v.length === 0) throw new CheckpointError(file, `${name} has only one of exp_avg and exp_avg_sq`);
  }
  return { step, moments };
}
