import * as tf from "@tensorflow/tfjs";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { readPeftAdapter } from "#core/formats/peft.ts";
import { randomWeights, tinyConfig } from "#trainer/model/testing/tiny-model.ts";
import { TrainingConfigError, TrajectoryError } from "./errors.ts";
import type { LoraTrainingOptions } from "./lora-trainer.ts";
import { trainLora } from "./lora-trainer.ts";
import type { TrainingConfigInput } from "./training-config.ts";
import type { StepEvent } from "./training-loop.ts";
import { asStream, randomTrajectories } from "./testing/trajectories.ts";
import { maxAdapterDiff } from "#trainer/model/testing/tiny-adapter.ts";

const config = tinyConfig("llama untied");
const expert = { config, weights: randomWeights(config, 31), source: "tiny-expert" };
const data = randomTrajectories(12, config.vocabSize, 7);
const settings: TrainingConfigInput = {
  learningRate: 1e-2,
  batchSize: 3,
  gradientAccumulation: 2,
  maxSteps: 6,
  warmupSteps: 1,
  lora: { rank: 4, alpha: 8, dropout: 0.1, targetModules: ["q_proj", "v_proj", "o_proj"] },
  checkpointEverySteps: 2,
  seed: 3,
};
const scratch = mkdtempSync(join(tmpdir(), "lora-trainer-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
let dirs = 0;
const freshDir = () => join(scratch, `run-${dirs++}`);


const run = (extra: Partial<LoraTrainingOptions> = {}) => trainLora({ expert, trajectories: data, config: settings, ...extra });

describe("trainLora", () => {
  it("3 steps, a restart from the checkpoint, 3 more: the same adapter as 6 straight", async () => {
    const straight = await run();
    expect(straight.stoppedBy).toBe("max-steps");
    expect(straight.progress.step).toBe(6);
    const dir = freshDir();
    const first = await run({ checkpointDir: dir, stopAfterSteps: 3 });
    expect(first).toMatchObject({ stoppedBy: "step-limit", finished: false, resumedFrom: null });
    expect(readdirSync(dir).sort()).toEqual(["checkpoint-000002", "checkpoint-000003"]);
    const second = await run({ checkpointDir: dir });
    expect(second).toMatchObject({ stoppedBy: "max-steps", finished: true, resumedFrom: 3 });
    expect(second.progress).toEqual({ ...straight.progress, trainSeconds: second.progress.trainSeconds, wallSeconds: second.progress.wallSeconds });
    // The training moved the adapter, and both runs moved it identically.
    expect(maxAdapterDiff(straight.adapter, (await run({ config: { ...settings, maxSteps: 1, warmupSteps: 0 } })).adapter)).toBeGreaterThan(1e-3);
    expect(maxAdapterDiff(second.adapter, straight.adapter)).toBe(0);
    // The newest checkpoint is the final adapter, in PEFT form.
    expect(maxAdapterDiff(readPeftAdapter(join(dir, "checkpoint-000006"), config), straight.adapter)).toBe(0);
    expect(readdirSync(dir).filter((n) => n.startsWith("."))).toEqual([]);
  });

  it("leaves no tensors behind per step, and reports the tfjs backend", async () => {
    // Measured as growth with the number of steps: LoraLayers.create keeps the tensors its
    // variables were made from (a fixed count per adapter, model/lora.ts), which is not the loop's.
    const leftAfter = async (maxSteps: number) => {
      const before = tf.memory().numTensors;
      const result = await run({ config: { ...settings, maxSteps, warmupSteps: 0, gradientCheckpointing: true } });
      expect(result.backend.kind).toBe(tf.getBackend() === "tensorflow" ? expect.stringMatching(/^node/) : tf.getBackend());
      return tf.memory().numTensors - before;
    };
    await leftAfter(1); // the backend's first use allocates its own
    expect(await leftAfter(4)).toBe(await leftAfter(1));
  });

  it("is deterministic from the seed, and the seed matters", async () => {
    const a = await run({ config: { ...settings, maxSteps: 2 } });
    const b = await run({ config: { ...settings, maxSteps: 2 } });
    const c = await run({ config: { ...settings, maxSteps: 2, seed: 4 } });
    expect(maxAdapterDiff(a.adapter, b.adapter)).toBe(0);
    expect(maxAdapterDiff(a.adapter, c.adapter)).toBeGreaterThan(1e-4);
  });

  it("reports every step: loss falls, samples and tuned tokens add up, lr follows the schedule", async () => {
    const events: StepEvent[] = [];
    const totalTargets = data.reduce((n, t) => n + t.targets.length, 0);
    const result = await run({ config: { ...settings, maxSteps: 30, lora: { ...settings.lora, dropout: 0 }, schedule: "constant" }, onStep: (e) => void events.push(e) });
    expect(events.map((e) => e.step)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    expect(events[0].learningRate).toBe(1e-2); // warm-up of one step reaches the peak at once
    for (const e of events) {
      expect(e.samples).toBe(6); // batch 3 x accumulation 2, in selected steps
      expect(e.tunedTokens).toBe(6);
      expect(e.samplesPerSecond).toBeGreaterThan(0);
      expect(e.gradNorm).toBeGreaterThan(0);
    }
    expect(result.progress.tunedTokens).toBe(180);
    // 180 samples is several passes over the data; each pass is one epoch.
    expect(events[29].epoch).toBe(Math.floor(180 / totalTargets));
    // The same data seen again in each epoch: a mean over the last epoch is well below the first.
    const mean = (xs: StepEvent[]) => xs.reduce((s, e) => s + e.loss, 0) / xs.length;
    expect(mean(events.slice(-5))).toBeLessThan(0.8 * mean(events.slice(0, 5)));
  });

  it("two micro-batches of 4 accumulate to the same step as one batch of 8", async () => {
    const common = { ...settings, maxSteps: 3, shuffle: false, lora: { ...settings.lora, dropout: 0 } };
    const accumulated = await run({ config: { ...common, batchSize: 4, gradientAccumulation: 2 } });
    const whole = await run({ config: { ...common, batchSize: 8, gradientAccumulation: 1 } });
    expect(maxAdapterDiff(accumulated.adapter, whole.adapter)).toBeLessThan(1e-6);
    expect(maxAdapterDiff(accumulated.adapter, (await run({ config: { ...common, batchSize: 4, gradientAccumulation: 1 } })).adapter)).toBeGreaterThan(1e-4);
  });

  it("clips the gradient to the global norm", async () => {
    const events: StepEvent[] = [];
    await run({ config: { ...settings, maxSteps: 2, maxGradNorm: 1e-3 }, onStep: (e) => void events.push(e) });
    expect(events.every((e) => e.clipped && e.gradNorm > 1e-3)).toBe(true);
    const free: StepEvent[] = [];
    await run({ config: { ...settings, maxSteps: 2, maxGradNorm: 0 }, onStep: (e) => void free.push(e) });
    expect(free.some((e) => e.clipped)).toBe(false);
  });

  it("trains on a stream as it arrives, hands over adapters every pushEverySteps, and resumes a stream", async () => {
    const pushed: number[] = [];
    const total = data.reduce((n, t) => n + t.targets.length, 0);
    const straight = await trainLora({ expert, trajectories: asStream(data), config: { ...settings, maxSteps: 100, pushEverySteps: 2 }, onAdapter: (_, step) => void pushed.push(step) });
    expect(straight.stoppedBy).toBe("data-exhausted");
    const steps = Math.ceil(total / 6);
    expect(straight.progress.step).toBe(steps);
    expect(straight.progress.tunedTokens).toBe(total); // every selected step exactly once
    expect(pushed).toEqual([...Array.from({ length: Math.floor(steps / 2) }, (_, i) => 2 * (i + 1)), ...(steps % 2 ? [steps] : [])]);

    const dir = freshDir();
    const streamed = { expert, config: { ...settings, maxSteps: 100 }, checkpointDir: dir };
    await trainLora({ ...streamed, trajectories: asStream(data), stopAfterSteps: 2 });
    const resumed = await trainLora({ ...streamed, trajectories: asStream(data) });
    expect(resumed.resumedFrom).toBe(2);
    expect(resumed.progress.tunedTokens).toBe(total);
    expect(maxAdapterDiff(resumed.adapter, straight.adapter)).toBe(0);
  });

  it("stops when aborted, leaving a checkpoint to resume from", async () => {
    const dir = freshDir();
    const controller = new AbortController();
    const result = await run({ checkpointDir: dir, signal: controller.signal, onStep: (e) => (e.step === 1 ? controller.abort() : undefined) });
    expect(result).toMatchObject({ stoppedBy: "aborted", finished: false });
    expect(existsSync(join(dir, "checkpoint-000001", "adapter_model.safetensors"))).toBe(true);
    expect(existsSync(join(dir, "checkpoint-000001", "optimizer.safetensors"))).toBe(true);
    // An abort from a timer gets through while the run is busy with steps.
    const timed = new AbortController();
    setTimeout(() => timed.abort(), 30);
    const busy = await run({ config: { ...settings, maxSteps: 500 }, signal: timed.signal });
    expect(busy.stoppedBy).toBe("aborted");
    expect(busy.progress.step).toBeLessThan(500);
    // A time limit ends a piece at the first step boundary past it.
    expect(await run({ checkpointDir: freshDir(), maxSeconds: 1e-9 })).toMatchObject({ stoppedBy: "time-limit", progress: { step: 1 } });
  });

  it("names the bad field: a malformed trajectory, a bad setting, a resume under other settings", async () => {
    const bad = data.map((t) => ({ ...t }));
    bad[1] = { ...bad[1], targets: [{ position: 3, ids: [1, 2], weights: [0.5, 0.7] }] };
    await expect(run({ trajectories: bad })).rejects.toThrow(TrajectoryError);
    await expect(run({ trajectories: bad })).rejects.toThrow(/trajectories\[1\]\.targets\[0\]\.weights: sum to 1\.2/);
    await expect(run({ trajectories: [{ tokenIds: [1, 99], promptLength: 1, targets: [] }] })).rejects.toThrow(/trajectories\[0\]\.tokenIds\[1\]: is 99; expected a token id in \[0, 64\)/);
    await expect(run({ trajectories: data.map((t) => ({ ...t, targets: [] })) })).rejects.toThrow(/none of the 12 trajectories has a position to train on/);
    await expect(run({ config: { ...settings, batchSize: 0 } })).rejects.toThrow(TrainingConfigError);
    await expect(run({ config: { ...settings, lora: { ...settings.lora, targetModules: ["q_proj", "x_proj" as "q_proj"] } } })).rejects.toThrow(/training\.lora\.targetModules\.1/);
    await expect(run({ config: { ...settings, warmupSteps: 6 } })).rejects.toThrow(/training\.warmupSteps: must be less than maxSteps/);
    const dir = freshDir();
    await run({ checkpointDir: dir, stopAfterSteps: 1 });
    await expect(run({ checkpointDir: dir, config: { ...settings, learningRate: 2e-2 } })).rejects.toThrow(/learningRate: is 0\.02, but the checkpoint .* was written with 0\.01/);
    // How often to save may change between pieces.
    await expect(run({ checkpointDir: dir, config: { ...settings, checkpointEverySteps: 5 }, stopAfterSteps: 1 })).resolves.toMatchObject({ resumedFrom: 1 });
  });
});
