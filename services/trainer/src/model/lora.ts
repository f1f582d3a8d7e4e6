// The trainable side of LoRA in TensorFlow.js: for each adapted linear layer a pair of
// variables A [rank, in] and B [out, rank], applied unmerged as
//   y = x W^T + b + (alpha / rank) * dropout(x) A^T B^T
// so that gradients reach A and B and never the frozen base weight W. Initialised the way
// PEFT does (A Kaiming-uniform with a = sqrt(5), B zero, so training starts at the base
// model), seeded, and convertible to and from the `LoraAdapter` data the PEFT reader and
// writer and the ONNX exporter share.
import * as tf from "@tensorflow/tfjs";
import type { ModelConfig } from "#core/model/config.ts";
import { ModelFormatError } from "#core/model/errors.ts";
import type { LoraAdapter, LoraPair, LoraSettings } from "#core/model/lora.ts";
import { DEFAULT_LORA, loraScale, loraTargets } from "#core/model/lora.ts";
import { LINEAR_MODULES } from "#core/model/weights.ts";
import { SeededRandom } from "#core/math/random.ts";
import { matMul, transposeLast } from "./matmul.ts";

interface LoraVariables {
  a: tf.Variable<tf.Rank.R2>; // [rank, in]
  b: tf.Variable<tf.Rank.R2>; // [out, rank]
  /** Position among the adapter's pairs; keys the pair's dropout masks. */
  index: number;
}

export class LoraLayers {
  readonly scale: number;
  private readonly pairs = new Map<string, LoraVariables>();
  private passes = 0;

  private constructor(
    readonly settings: LoraSettings,
    private readonly seed: number,
  ) {
    this.scale = loraScale(settings);
  }

  /** A fresh adapter for `config`: A ~ U(-1/sqrt(in), 1/sqrt(in)), B = 0. */
  static create(config: ModelConfig, settings: LoraSettings = DEFAULT_LORA, seed = 0): LoraLayers {
    checkSettings(settings, "LoRA settings");
    const layers = new LoraLayers(copySettings(settings), seed);
    const random = new SeededRandom(seed);
    for (const { name, shape: [out, inFeatures] } of loraTargets(config, settings)) {
      // kaiming_uniform(a = sqrt 5): gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in).
      const bound = 1 / Math.sqrt(inFeatures);
      const a = new Float32Array(settings.rank * inFeatures);
      for (let i = 0; i < a.length; i++) a[i] = (2 * random.next() - 1) * bound;
      layers.pairs.set(name, {
        a: variableFrom(tf.tensor2d(a, [settings.rank, inFeatures])),
        b: variableFrom(tf.zeros<tf.Rank.R2>([out, settings.rank])),
        index: layers.pairs.size,
      });
    }
    return layers;
  }

  /** Trainable variables holding a loaded adapter; checks it fits `config`. */
  static fromAdapter(config: ModelConfig, adapter: LoraAdapter, options: { seed?: number; source?: string } = {}): LoraLayers {
    const source = options.source ?? "LoRA adapter";
    checkSettings(adapter.settings, source);
    const layers = new LoraLayers(copySettings(adapter.settings), options.seed ?? 0);
    const targets = loraTargets(config, adapter.settings);
    const expected = new Set(targets.map((t) => t.name));
    for (const name of adapter.pairs.keys()) {
      if (!expected.has(name)) {
        throw new ModelFormatError(source, `has a LoRA pair for ${name}, which is not among its target modules on this model (${adapter.settings.targetModules.join(", ")})`);
      }
    }
    const { rank } = adapter.settings;
    for (const { name, shape: [out, inFeatures] } of targets) {
      const pair = adapter.pairs.get(name);
      if (!pair) throw new ModelFormatError(source, `has no LoRA pair for ${name}`);
      checkMatrix(source, `${name} lora_A`, pair.a, [rank, inFeatures]);
      checkMatrix(source, `${name} lora_B`, pair.b, [out, rank]);
      layers.pairs.set(name, {
        a: variableFrom(tf.tensor2d(pair.a.data.slice(), [rank, inFeatures])),
        b: variableFrom(tf.tensor2d(pair.b.data.slice(), [out, rank])),
        index: layers.pairs.size,
      });
    }
    return layers;
  }

  /** Names of the base weights this adapter changes. */
  targets(): string[] {
    return [...this.pairs.keys()];
  }

  /** [rank, in] and [out, rank] of the pair adapting `name`, or undefined. */
  shapeOf(name: string): { a: number[]; b: number[] } | undefined {
    const pair = this.pairs.get(name);
    return pair && { a: pair.a.shape, b: pair.b.shape };
  }

  /**
   * Numbers a training forward pass. Dropout masks are a function of (seed, pass, pair), so
   * a pass recomputed for the backward (checkpointing) sees the masks it saw the first time,
   * and a run replays exactly from its seed.
   */
  beginPass(): number {
    return this.passes++;
  }

  /**
   * The LoRA term scale * dropout(x) A^T B^T for x [n, in], or null if `name` is not
   * adapted; `dropoutPass` (from beginPass) turns dropout on, null leaves it off.
   */
  delta(name: string, x: tf.Tensor2D, dropoutPass: number | null): tf.Tensor2D | null {
    const pair = this.pairs.get(name);
    if (!pair) return null;
    const input = dropoutPass === null ? x : this.dropout(x, dropoutPass, pair.index);
    // Explicit transposes of the small A and B keep the products plain (see matmul.ts).
    const down = tf.mul<tf.Tensor2D>(matMul(input, transposeLast(pair.a)), this.scale);
    return matMul(down, transposeLast(pair.b));
  }

  /** Inverted dropout: zero with probability p, scale the rest by 1 / (1 - p). */
  private dropout(x: tf.Tensor2D, pass: number, pairIndex: number): tf.Tensor2D {
    const keep = this.keepFactors(pass, pairIndex, x.size);
    return keep ? tf.mul(x, tf.tensor2d(keep, x.shape)) : x;
  }

  /**
   * The factors dropout multiplies the input of pair `name` by in pass `pass` (0 or
   * 1 / (1 - p), row-major over its [rows, in] input of `size` values), or null when the
   * dropout probability is 0. The ONNX Runtime engine feeds these to its graphs, so both
   * engines drop the same inputs.
   */
  dropoutFactors(name: string, pass: number, size: number): Float32Array | null {
    const pair = this.pairs.get(name);
    if (!pair) throw new Error(`LoRA adapter has no pair for ${name}`);
    return this.keepFactors(pass, pair.index, size);
  }

  private keepFactors(pass: number, pairIndex: number, size: number): Float32Array | null {
    const p = this.settings.dropout;
    if (p === 0) return null;
    const random = new SeededRandom((Math.imul(this.seed ^ 0x5bd1e995, 0x9e3779b1) ^ Math.imul(pass + 1, 0x85ebca6b) ^ Math.imul(pairIndex + 1, 0xc2b2ae35)) >>> 0);
    const keep = new Float32Array(size);
    const kept = 1 / (1 - p);
    for (let i = 0; i < keep.length; i++) keep[i] = random.next() < p ? 0 : kept;
    return keep;
  }

  /** Copies of the current A [rank, in] and B [out, rank] of pair `name`. */
  pairValues(name: string): { a: Float32Array; b: Float32Array } {
    const pair = this.pairs.get(name);
    if (!pair) throw new Error(`LoRA adapter has no pair for ${name}`);
    // dataSync may return a view of backend memory (wasm); copy.
    return { a: (pair.a.dataSync() as Float32Array).slice(), b: (pair.b.dataSync() as Float32Array).slice() };
  }

  /** A and B of every pair, or of the pairs whose adapted weight's name passes `which`. */
  variables(which: (name: string) => boolean = () => true): tf.Variable[] {
    return [...this.pairs].filter(([name]) => which(name)).flatMap(([, { a, b }]) => [a, b]);
  }

  /** A copy of the current A and B as plain data, for saving or merging. */
  toAdapter(): LoraAdapter {
    const pairs = new Map<string, LoraPair>();
    for (const [name, { a, b }] of this.pairs) {
      // dataSync may return a view of backend memory (wasm); copy before handing it out.
      pairs.set(name, {
        a: { shape: [...a.shape], data: (a.dataSync() as Float32Array).slice() },
        b: { shape: [...b.shape], data: (b.dataSync() as Float32Array).slice() },
      });
    }
    return { settings: copySettings(this.settings), pairs };
  }

  dispose(): void {
    for (const { a, b } of this.pairs.values()) {
      a.dispose();
      b.dispose();
    }
    this.pairs.clear();
  }
}

function copySettings(s: LoraSettings): LoraSettings {
  return { rank: s.rank, alpha: s.alpha, dropout: s.dropout, targetModules: [...s.targetModules] };
}

function checkSettings(s: LoraSettings, source: string): void {
  if (!Number.isInteger(s.rank) || s.rank <= 0) throw new ModelFormatError(source, `rank (r) must be a positive integer, got ${s.rank}`);
  if (!(s.alpha > 0)) throw new ModelFormatError(source, `alpha (lora_alpha) must be positive, got ${s.alpha}`);
  if (!(s.dropout >= 0 && s.dropout < 1)) throw new ModelFormatError(source, `dropout (lora_dropout) must be in [0, 1), got ${s.dropout}`);
  if (!Array.isArray(s.targetModules) || s.targetModules.length === 0) {
    throw new ModelFormatError(source, "target_modules must name at least one module");
  }
  const seen = new Set<string>();
  for (const m of s.targetModules) {
    if (!(LINEAR_MODULES as readonly string[]).includes(m)) {
      throw new ModelFormatError(source, `target module "${m}" is not one of ${LINEAR_MODULES.join(", ")}`);
    }
    if (seen.has(m)) throw new ModelFormatError(source, `target module "${m}" is listed twice`);
    seen.add(m);
  }
}

function checkMatrix(source: string, what: string, t: { shape: number[]; data: Float32Array }, shape: [number, number]): void {
  if (t.shape.length !== 2 || t.shape[0] !== shape[0] || t.shape[1] !== shape[1]) {
    throw new ModelFormatError(source, `${what} has shape [${t.shape.join(", ")}], expected [${shape.join(", ")}] (rank and model size must match)`);
  }
  if (t.data.length !== shape[0] * shape[1]) {
    throw new ModelFormatError(source, `${what} holds ${t.data.length} values, its shape needs ${shape[0] * shape[1]}`);
  }
}

/** A trainable variable holding `initial`'s values; the source tensor is freed (tf.variable copies it). */
function variableFrom(initial: tf.Tensor2D): tf.Variable<tf.Rank.R2> {
  const variable = tf.variable(initial, true);
  initial.dispose();
  return variable;
}
