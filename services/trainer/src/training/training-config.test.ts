import { describe, expect, it } from "vitest";
import { z } from "zod";
import { DEFAULT_LORA } from "#core/model/lora.ts";
import { TrainingConfigError } from "./errors.ts";
import { learningRateAt } from "./schedule.ts";
import { scheduleOf } from "./training-loop.ts";
import { DEFAULT_PRETRAIN_CONFIG, DEFAULT_TRAINING_CONFIG, pretrainConfigSchema, resolvePretrainConfig, resolveTrainingConfig, trainingConfigSchema } from "./training-config.ts";

describe("training settings", () => {
  it("default to the reference's stage-2 settings", () => {
    expect(DEFAULT_TRAINING_CONFIG).toMatchObject({ learningRate: 5e-5, batchSize: 8, gradientAccumulation: 2, maxSteps: 1000, lora: { ...DEFAULT_LORA } });
    expect(DEFAULT_TRAINING_CONFIG.lora).toEqual({ rank: 8, alpha: 16, dropout: 0.05, targetModules: ["q_proj", "v_proj"] });
    // Hugging Face Trainer's defaults, which the reference ran under.
    expect(DEFAULT_TRAINING_CONFIG).toMatchObject({ schedule: "linear", warmupSteps: 0, weightDecay: 0, maxGradNorm: 1, adamBeta1: 0.9, adamBeta2: 0.999, adamEpsilon: 1e-8 });
  });

  it("fills what is unset (undefined included) and keeps what is set", () => {
    const c = resolveTrainingConfig({ learningRate: 1e-4, batchSize: undefined, lora: { rank: 4 } });
    expect(c.learningRate).toBe(1e-4);
    expect(c.batchSize).toBe(8);
    expect(c.lora).toEqual({ rank: 4, alpha: 16, dropout: 0.05, targetModules: ["q_proj", "v_proj"] });
    expect(resolvePretrainConfig({ completionOnly: true, seqLen: 128 })).toEqual({ ...DEFAULT_PRETRAIN_CONFIG, completionOnly: true, seqLen: 128 });
  });

  it("names the bad field", () => {
    const fieldOf = (input: unknown) => {
      try {
        resolveTrainingConfig(input);
      } catch (err) {
        expect(err).toBeInstanceOf(TrainingConfigError);
        return (err as TrainingConfigError).field;
      }
      return null;
    };
    expect(fieldOf({ learningRate: -1 })).toBe("training.learningRate");
    expect(fieldOf({ batchSize: 2.5 })).toBe("training.batchSize");
    expect(fieldOf({ lora: { dropout: 1 } })).toBe("training.lora.dropout");
    expect(fieldOf({ lora: { targetModules: ["q_proj", "q_proj"] } })).toBe("training.lora.targetModules");
    expect(fieldOf({ schedule: "step" })).toBe("training.schedule");
    expect(fieldOf({ maxSteps: 10, warmupSteps: 10 })).toBe("training.warmupSteps");
    expect(fieldOf({ maxSteps: 10, scheduleSteps: 9 })).toBe("training.scheduleSteps");
    expect(fieldOf({ learningrate: 1 })).toBe("training");
    expect(() => resolvePretrainConfig({ seqLen: 1 })).toThrow(/pretrain\.seqLen: Too small/);
  });

  it("documents every field, with its default, for the CLI and the gRPC API to show", () => {
    for (const schema of [trainingConfigSchema, pretrainConfigSchema]) {
      const json = z.toJSONSchema(schema, { io: "input" }) as { properties: Record<string, { description?: string; default?: unknown; properties?: Record<string, { description?: string }> }> };
      for (const [field, p] of Object.entries(json.properties)) {
        expect(p.description, field).toMatch(/\w{4,}/);
        for (const [inner, q] of Object.entries(p.properties ?? {})) expect(q.description, `${field}.${inner}`).toMatch(/\w{4,}/);
      }
    }
    const json = z.toJSONSchema(trainingConfigSchema, { io: "input" }) as { properties: Record<string, { default?: unknown }> };
    expect(json.properties.learningRate.default).toBe(5e-5);
  });

  it("lets a run stop part way down a longer schedule", () => {
    const stopped = resolvePretrainConfig({ maxSteps: 7, scheduleSteps: 8, warmupSteps: 0, minLearningRateRatio: 0 });
    const full = resolvePretrainConfig({ maxSteps: 8, warmupSteps: 0, minLearningRateRatio: 0 });
    // the first 7 rates of the 8-step cosine, not a 7-step cosine that reaches the floor
    for (let step = 0; step < 7; step++) expect(learningRateAt(scheduleOf(stopped), step)).toBe(learningRateAt(scheduleOf(full), step));
    expect(learningRateAt(scheduleOf(stopped), 6)).toBeGreaterThan(0);
    expect(scheduleOf(resolvePretrainConfig({ maxSteps: 7, warmupSteps: 0 })).totalSteps).toBe(7);
  });
});
