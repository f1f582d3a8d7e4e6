// Which engine trains where, and that both engines train the same adapter: a few optimizer
// steps of trainLora (dropout, accumulation, clipping, AdamW all on) through TensorFlow.js
// autodiff and through the ONNX Runtime graphs end within float32 rounding of each other.
import { describe, expect, it } from "vitest";
import type { BackendChoice } from "#trainer/model/backend.ts";
import { LoraLayers } from "#trainer/model/lora.ts";
import { randomWeights, tinyConfig } from "#trainer/model/testing/tiny-model.ts";
import { TrainingConfigError } from "./errors.ts";
import { chooseLoraEngine, describeEngineChoice, ENGINE_ENV } from "./gradient-engine.ts";
import { trainLora } from "./lora-trainer.ts";
import { randomTrajectories } from "./testing/trajectories.ts";
import { maxAdapterDiff } from "#trainer/model/testing/tiny-adapter.ts";

const backend = (kind: BackendChoice["kind"]): BackendChoice => ({ kind, tfjsName: kind, forced: false, skipped: [] });


describe("chooseLoraEngine", () => {
  it("keeps tfjs where native TensorFlow runs, takes ONNX Runtime on wasm and cpu", () => {
    expect(chooseLoraEngine(backend("node-gpu"), undefined, {}).kind).toBe("tfjs");
    expect(chooseLoraEngine(backend("node"), undefined, {}).kind).toBe("tfjs");
    expect(chooseLoraEngine(backend("wasm"), undefined, {}).kind).toBe("onnxruntime");
    expect(chooseLoraEngine(backend("cpu"), "auto", {}).kind).toBe("onnxruntime");
    expect(describeEngineChoice(chooseLoraEngine(backend("wasm"), undefined, {}))).toMatch(/^training engine onnxruntime \(tfjs has only wasm here/);
  });

  it("obeys the option, then LR_TRAIN_ENGINE, and names a bad value", () => {
    expect(chooseLoraEngine(backend("wasm"), "tfjs", { [ENGINE_ENV]: "onnxruntime" })).toEqual({ kind: "tfjs", forced: true, reason: "forced by option" });
    expect(chooseLoraEngine(backend("node"), undefined, { [ENGINE_ENV]: "onnxruntime" })).toMatchObject({ kind: "onnxruntime", forced: true });
    expect(() => chooseLoraEngine(backend("wasm"), undefined, { [ENGINE_ENV]: "torch" })).toThrow(TrainingConfigError);
    expect(() => chooseLoraEngine(backend("wasm"), undefined, { [ENGINE_ENV]: "torch" })).toThrow(/engine: LR_TRAIN_ENGINE or the engine option must be one of auto, tfjs, onnxruntime; got "torch"/);
  });

  it("trainLora trains with a choice made before (the trainer's, at start-up) and logs it with its own reason", async () => {
    const config = tinyConfig("qwen2 tied");
    const chosen = chooseLoraEngine(backend("wasm"), undefined, {});
    const lines: string[] = [];
    const result = await trainLora({
      expert: { config, weights: randomWeights(config, 5), source: "tiny-expert" },
      trajectories: randomTrajectories(4, config.vocabSize, 3),
      config: { batchSize: 2, gradientAccumulation: 1, maxSteps: 1, lora: { rank: 2, alpha: 4, dropout: 0, targetModules: ["q_proj"] }, seed: 1 },
      engine: chosen,
      log: (line) => lines.push(line),
    });
    expect(result.engine).toEqual(chosen);
    expect(lines).toContain(describeEngineChoice(chosen));
    expect(lines.join("\n")).not.toContain("forced by option");
  });
});

describe("the two engines", () => {
  it.each(["qwen2 tied", "llama tied, attention_bias, head_dim 16"] as const)("%s: 4 steps give the same adapter through tfjs and ONNX Runtime", async (variant) => {
    const config = tinyConfig(variant);
    const expert = { config, weights: randomWeights(config, 41), source: "tiny-expert" };
    const trajectories = randomTrajectories(10, config.vocabSize, 5);
    const settings = {
      learningRate: 2e-2,
      batchSize: 3,
      gradientAccumulation: 2,
      maxSteps: 4,
      maxGradNorm: 0.5,
      lora: { rank: 4, alpha: 8, dropout: 0.1, targetModules: ["q_proj", "v_proj", "up_proj"] as ("q_proj" | "v_proj" | "up_proj")[] },
      seed: 2,
    };
    const losses = { tfjs: [] as number[], onnxruntime: [] as number[] };
    const run = (engine: "tfjs" | "onnxruntime") => trainLora({ expert, trajectories, config: settings, engine, onStep: (e) => void losses[engine].push(e.loss) });
    const [viaTfjs, viaOrt] = [await run("tfjs"), await run("onnxruntime")];
    expect(viaTfjs.engine.kind).toBe("tfjs");
    expect(viaOrt.engine.kind).toBe("onnxruntime");
    expect(viaOrt.progress).toEqual({ ...viaTfjs.progress, trainSeconds: viaOrt.progress.trainSeconds, wallSeconds: viaOrt.progress.wallSeconds });
    losses.tfjs.forEach((loss, i) => expect(Math.abs(losses.onnxruntime[i] - loss)).toBeLessThan(1e-5 * Math.max(1, loss)));
    // The adapter moved by ~lr per step and per entry; the engines agree far below that.
    const initial = LoraLayers.create(config, settings.lora, settings.seed);
    expect(maxAdapterDiff(viaTfjs.adapter, initial.toAdapter())).toBeGreaterThan(1e-2);
    initial.dispose();
    expect(maxAdapterDiff(viaOrt.adapter, viaTfjs.adapter)).toBeLessThan(1e-4);
  });
});
