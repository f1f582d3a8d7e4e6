import { describe, expect, it } from "vitest";
import { logSoftmax } from "#core/math/distribution.ts";
import { CausalLM } from "#trainer/model/transformer.ts";
import { randomWeights, tinyConfig } from "#trainer/model/testing/tiny-model.ts";
import { keepCorrect, sftTrajectory, trainSft } from "./sft.ts";
import type { StepEvent } from "./training-loop.ts";
import { randomTrajectories } from "./testing/trajectories.ts";

const config = tinyConfig("qwen2 untied");
const weights = randomWeights(config, 41);
const expert = { config, weights };
// Soft targets on the trajectories must not matter to SFT: it labels every completion token.
const kept = randomTrajectories(6, config.vocabSize, 9);
const completionTokens = kept.reduce((n, t) => n + t.tokenIds.length - t.promptLength, 0);

describe("trainSft", () => {
  it("its first loss is the mean cross-entropy over every completion token", async () => {
    const events: StepEvent[] = [];
    const result = await trainSft({ expert, trajectories: kept, config: { batchSize: 6, gradientAccumulation: 1, maxSteps: 1, shuffle: false, lora: { dropout: 0 } }, onStep: (e) => void events.push(e) });
    // Worked out independently: the base model's forward (LoRA B starts at zero), one token at a time.
    const model = new CausalLM(config, weights);
    let sum = 0;
    for (const t of kept) {
      const logits = model.forward([[...t.tokenIds]]).dataSync();
      for (let p = t.promptLength; p < t.tokenIds.length; p++) sum -= logSoftmax(logits, (p - 1) * config.vocabSize, config.vocabSize)[t.tokenIds[p]];
    }
    model.dispose();
    expect(events[0].loss).toBeCloseTo(sum / completionTokens, 5);
    expect(events[0].samples).toBe(6); // a sample is a trajectory
    expect(events[0].tunedTokens).toBe(completionTokens);
    expect(result.objective).toBe("cross-entropy-completion");
  });

  it("counts completion tokens as tuned tokens and lowers the loss on the kept trajectories", async () => {
    const events: StepEvent[] = [];
    const result = await trainSft({ expert, trajectories: kept, config: { batchSize: 2, gradientAccumulation: 1, maxSteps: 24, learningRate: 2e-2, schedule: "constant" }, onStep: (e) => void events.push(e) });
    expect(result.progress.tunedTokens).toBe(8 * completionTokens); // 24 steps x 2 = 8 passes over 6 trajectories
    expect(result.progress.samples).toBe(48);
    // Three steps per pass; a step's epoch is that of the data it read.
    const epochLoss = (epoch: number) => events.filter((e) => e.epoch === epoch).reduce((s, e) => s + e.loss * e.tunedTokens, 0);
    expect(events.filter((e) => e.epoch === 7).length).toBe(3);
    expect(epochLoss(7)).toBeLessThan(0.7 * epochLoss(0));
  });
});

describe("trainSft matched to another run's budget", () => {
  // In data order (no shuffling), two trajectories per step; the completion tokens of each trajectory:
  const lengths = kept.map((t) => t.tokenIds.length - t.promptLength);
  const settings = { batchSize: 2, gradientAccumulation: 1, maxSteps: 24, shuffle: false, lora: { dropout: 0 } };

  it("stops on the token budget exactly: the step that reaches it trains on only the tokens that fit", async () => {
    // Two whole steps and three tokens of the third step's first trajectory.
    const budget = lengths[0] + lengths[1] + lengths[2] + lengths[3] + 3;
    const events: StepEvent[] = [];
    const result = await trainSft({ expert, trajectories: kept, config: { ...settings, maxTunedTokens: budget }, onStep: (e) => void events.push(e) });
    expect(result).toMatchObject({ stoppedBy: "token-budget", finished: true });
    expect(result.progress.step).toBe(3);
    expect(result.progress.tunedTokens).toBe(budget);
    expect(events.map((e) => e.tunedTokens)).toEqual([lengths[0] + lengths[1], lengths[2] + lengths[3], 3]);
    expect(events.map((e) => e.samples)).toEqual([2, 2, 1]);
    // A budget that a step meets exactly needs no cut and stops there.
    const exact = await trainSft({ expert, trajectories: kept, config: { ...settings, maxTunedTokens: lengths[0] + lengths[1] } });
    expect(exact).toMatchObject({ stoppedBy: "token-budget", progress: { step: 1, tunedTokens: lengths[0] + lengths[1] } });
  });

  it("stops on the wall-time budget after the step that reaches it, as a finished run", async () => {
    const result = await trainSft({ expert, trajectories: kept, config: { ...settings, maxWallSeconds: 1e-9 } });
    expect(result).toMatchObject({ stoppedBy: "time-budget", finished: true, progress: { step: 1 } });
    expect(result.progress.wallSeconds).toBeGreaterThan(0);
  });
});

describe("sftTrajectory and keepCorrect", () => {
  it("builds a prompt + completion trajectory and keeps the right ones", () => {
    expect(sftTrajectory([1, 2], [3, 4, 5])).toEqual({ tokenIds: [1, 2, 3, 4, 5], promptLength: 2, targets: [] });
    const { kept: right, rejected } = keepCorrect([1, 2, 3, 4, 5], (n) => n % 2 === 1);
    expect(right).toEqual([1, 3, 5]);
    expect(rejected).toBe(2);
  });
});
