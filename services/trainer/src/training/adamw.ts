// AdamW (Loshchilov & Hutter: Adam with weight decay applied to the weights, not folded into
// the gradient) over tf.Variables, with PyTorch's update order and bias correction, since
// TensorFlow.js ships no AdamW. Its state (both moments per variable and the step count)
// comes out as plain Float32Arrays, so a checkpoint can store it and a resumed run continues
// bit for bit.
//   p <- p (1 - lr wd)
//   m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
//   p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
import * as tf from "@tensorflow/tfjs";
import { CheckpointError } from "./errors.ts";

/** A variable with the stable name its optimizer state is saved under (e.g. a Hugging Face weight name). */
export interface NamedVariable {
  name: string;
  variable: tf.Variable;
}

export interface AdamWSettings {
  beta1: number;
  beta2: number;
  epsilon: number;
  weightDecay: number;
  /** Which variables weight decay applies to (default all); pretraining spares norms and biases. */
  decays?: (name: string) => boolean;
}

export interface Moments {
  /** First moment (PyTorch's exp_avg). */
  m: Float32Array;
  /** Second moment (exp_avg_sq). */
  v: Float32Array;
}

export interface AdamWState {
  /** Updates applied so far (t of the bias correction after the last one). */
  step: number;
  moments: Map<string, Moments>;
}

interface Slot extends NamedVariable {
  m: tf.Variable;
  v: tf.Variable;
  decays: boolean;
}

export class AdamW {
  private readonly slots: Slot[];
  private t = 0;

  constructor(
    params: readonly NamedVariable[],
    readonly settings: AdamWSettings,
  ) {
    const names = new Set<string>();
    for (const { name } of params) {
      if (names.has(name)) throw new Error(`AdamW: two variables are named ${name}`);
      names.add(name);
    }
    this.slots = params.map(({ name, variable }) => ({
      name,
      variable,
      m: tf.tidy(() => tf.variable(tf.zerosLike(variable), false)),
      v: tf.tidy(() => tf.variable(tf.zerosLike(variable), false)),
      decays: settings.decays ? settings.decays(name) : true,
    }));
  }

  /** Updates applied so far. */
  get step(): number {
    return this.t;
  }

  /** One update with `grads[i]` for the i-th variable at learning rate `lr`. */
  apply(grads: readonly tf.Tensor[], lr: number): void {
    if (grads.length !== this.slots.length) throw new Error(`AdamW: ${grads.length} gradients for ${this.slots.length} variables`);
    const { beta1, beta2, epsilon, weightDecay } = this.settings;
    this.t += 1;
    const stepSize = lr / (1 - beta1 ** this.t);
    const correction2 = Math.sqrt(1 - beta2 ** this.t);
    this.slots.forEach((slot, i) => {
      tf.tidy(() => {
        const g = grads[i];
        const m = tf.add(tf.mul(slot.m, beta1), tf.mul(g, 1 - beta1));
        const v = tf.add(tf.mul(slot.v, beta2), tf.mul(tf.square(g), 1 - beta2));
        const decayed = slot.decays && weightDecay > 0 ? tf.mul(slot.variable, 1 - lr * weightDecay) : slot.variable;
        const denom = tf.add(tf.div(tf.sqrt(v), correction2), epsilon);
        slot.variable.assign(tf.sub(decayed, tf.mul(tf.div(m, denom), stepSize)));
        slot.m.assign(m);
        slot.v.assign(v);
      });
    });
  }

  /** A copy of the moments and step count. */
  state(): AdamWState {
    const moments = new Map<string, Moments>();
    for (const slot of this.slots) {
      // dataSync may return a view of backend memory (wasm): copy.
      moments.set(slot.name, { m: (slot.m.dataSync() as Float32Array).slice(), v: (slot.v.dataSync() as Float32Array).slice() });
    }
    return { step: this.t, moments };
  }

  /** Restores a saved state; every variable must have moments of its size. `source` names the file in errors. */
  load(state: AdamWState, source: string): void {
    if (!Number.isInteger(state.step) || state.step < 0) throw new CheckpointError(source, `optimizer step must be an integer >= 0, got ${state.step}`);
    for (const slot of this.slots) {
      const saved = state.moments.get(slot.name);
      if (!saved) throw new CheckpointError(source, `has no optimizer moments for ${slot.name}`);
      for (const key of ["m", "v"] as const) {
        if (saved[key].length !== slot.variable.size) {
          throw new CheckpointError(source, `moment ${key} of ${slot.name} holds ${saved[key].length} values, the variable has ${slot.variable.size}`);
        }
      }
    }
    const extra = [...state.moments.keys()].filter((name) => !this.slots.some((s) => s.name === name));
    if (extra.length > 0) throw new CheckpointError(source, `holds optimizer moments for ${extra[0]}, which is not being trained`);
    for (const slot of this.slots) {
      const saved = state.moments.get(slot.name)!;
      tf.tidy(() => {
        slot.m.assign(tf.tensor(saved.m, slot.variable.shape, "float32"));
        slot.v.assign(tf.tensor(saved.v, slot.variable.shape, "float32"));
      });
    }
    this.t = state.step;
  }

  dispose(): void {
    for (const slot of this.slots) {
      slot.m.dispose();
      slot.v.dispose();
    }
  }
}
