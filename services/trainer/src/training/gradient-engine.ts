// What computes a micro-batch's loss and gradients for the training loop, chosen once per
// machine at run time and reported like the tfjs backend:
//   tfjs         TensorFlow.js autodiff through transformer.ts, on whatever backend runs
//                (the only engine for full-parameter pretraining)
//   onnxruntime  for LoRA: the frozen expert's forward and hand-written backward run by
//                ONNX Runtime (onnx-lora-expert.ts); the adapter and AdamW stay in tfjs
// With native TensorFlow (node, node-gpu) installed, tfjs runs its kernels at native speed
// (and on the GPU) and wins. Without it, tfjs has only wasm or pure JS, and ONNX Runtime's
// CPU kernels are ~30x faster and hold a 0.5B expert that wasm's 4 GiB heap cannot (the
// README's "Training engine" section gives the measurements).
import * as tf from "@tensorflow/tfjs";
import type { BackendChoice } from "#trainer/model/backend.ts";
import type { LoraLayers } from "#trainer/model/lora.ts";
import type { OnnxLoraExpert } from "#trainer/model/onnx-lora-expert.ts";
import type { CausalLM, SelectedPosition } from "#trainer/model/transformer.ts";
import { TrainingConfigError } from "./errors.ts";
import { softLabelKlLoss } from "./kl-loss.ts";
import type { SoftLabel } from "./trajectory.ts";

export const ENGINE_KINDS = ["tfjs", "onnxruntime"] as const;
export type EngineKind = (typeof ENGINE_KINDS)[number];

/** Environment variable that forces one engine (`auto` or unset: the machine's best). */
export const ENGINE_ENV = "LR_TRAIN_ENGINE";

export interface EngineChoice {
  kind: EngineKind;
  forced: boolean;
  /** Why this engine, in a few words. */
  reason: string;
}

/** What an engine reads of a micro-batch (the training loop's ForwardInputs). */
export interface EngineBatch {
  /** Token rows, right-padded to one length. */
  rows: number[][];
  /** [row, position] whose logits predict each label. */
  positions: SelectedPosition[];
  labels: SoftLabel[];
}

export interface GradientEngine {
  /**
   * The micro-batch's loss, sum of KL / normaliser, and its gradient in each trainable
   * variable (in the loop's parameter order; the caller disposes them). `training` turns on
   * LoRA dropout and counts a forward pass.
   */
  lossAndGradients(inputs: EngineBatch, normaliser: number, training: boolean): Promise<{ loss: number; grads: tf.Tensor[] }>;
}

/** The engine for LoRA training on this machine: `force`, else LR_TRAIN_ENGINE, else by tfjs backend. */
export function chooseLoraEngine(backend: BackendChoice, force: EngineKind | "auto" | undefined, env: NodeJS.ProcessEnv = process.env): EngineChoice {
  const wanted = force ?? (env[ENGINE_ENV] || "auto");
  if (wanted !== "auto") {
    if (!(ENGINE_KINDS as readonly string[]).includes(wanted)) {
      throw new TrainingConfigError("engine", `${ENGINE_ENV} or the engine option must be one of auto, ${ENGINE_KINDS.join(", ")}; got "${wanted}"`);
    }
    return { kind: wanted as EngineKind, forced: true, reason: `forced by ${force ? "option" : ENGINE_ENV}` };
  }
  if (backend.kind === "node-gpu" || backend.kind === "node") {
    return { kind: "tfjs", forced: false, reason: `native TensorFlow (${backend.kind}) is installed` };
  }
  return { kind: "onnxruntime", forced: false, reason: `tfjs has only ${backend.kind} here; ONNX Runtime's CPU kernels are faster and hold the base once` };
}

export function describeEngineChoice(choice: EngineChoice): string {
  return `training engine ${choice.kind} (${choice.reason})`;
}

/** TensorFlow.js autodiff over `variables`. */
export function tfjsEngine(model: CausalLM, variables: readonly tf.Variable[], checkpoint: boolean): GradientEngine {
  return {
    lossAndGradients: async ({ rows, positions, labels }, normaliser, training) => {
      const { value, grads } = tf.variableGrads(() => softLabelKlLoss(model.logitsAt(rows, undefined, positions, { training, checkpoint }), labels, normaliser), [...variables]);
      const loss = value.dataSync()[0];
      value.dispose();
      // A variable the loss does not reach (none in these models, but tfjs allows it) gets zeros.
      return { loss, grads: variables.map((v) => grads[v.name] ?? tf.zerosLike(v)) };
    },
  };
}

/** ONNX Runtime's hand-written backward; gradients come back as [A, B] per pair in `lora.targets()` order. */
export function onnxEngine(expert: OnnxLoraExpert, lora: LoraLayers): GradientEngine {
  return {
    lossAndGradients: async ({ rows, positions, labels }, normaliser, training) => {
      // beginPass() numbers the pass as the tfjs forward would, so dropout masks match.
      const dropoutPass = training ? lora.beginPass() : null;
      const { loss, grads } = await expert.lossAndGradients({ rows, positions, labels, normaliser, dropoutPass }, lora);
      const out = lora.targets().flatMap((name) => {
        const shape = lora.shapeOf(name)!;
        const g = grads.get(name)!;
        return [tf.tensor(g.a, shape.a, "float32"), tf.tensor(g.b, shape.b, "float32")];
      });
      return { loss, grads: out };
    },
  };
}
