// The llama / qwen2 causal LM in TensorFlow.js, for the trainer: the same architecture the
// ONNX exporter writes, block for block, so a reviewer can hold one against the other.
//   x = embed(ids)
//   for each layer: x = x + attention(rmsNorm(x)); x = x + mlp(rmsNorm(x))
//   logits = rmsNorm(x) W_lm^T
// Activations flow as [batch * seq, hidden] rows; attention alone reshapes to heads. Base
// weights are constant tensors (LoRA training) or variables (full-parameter training, e.g.
// pretraining the project's own small models); an optional LoraLayers adds its term to the
// linear layers it targets. Projection matrices are held transposed, [in, out], so every
// product is a plain a·b (the only fast one on wasm, see matmul.ts).
import * as tf from "@tensorflow/tfjs";
import type { ModelConfig } from "#core/model/config.ts";
import { ModelFormatError } from "#core/model/errors.ts";
import type { LinearModule, WeightMap } from "#core/model/weights.ts";
import { expectedWeights, layerPrefix, linearWeightName, lmHeadName } from "#core/model/weights.ts";
import { checkWeightsFitBackend } from "./backend.ts";
import { gatherColumns, gatherRows } from "./gather-rows.ts";
import type { Batch } from "./inputs.ts";
import { attentionBias, ModelInputError, prepareBatch } from "./inputs.ts";
import type { LoraLayers } from "./lora.ts";
import { matMul, matMulFrozen, transposeLast } from "./matmul.ts";
import type { RopeTables } from "./rope.ts";
import { applyRope, ropeTables } from "./rope.ts";

export interface ForwardOptions {
  /** Turns on LoRA dropout. */
  training?: boolean;
  /**
   * For a forward whose gradient will be taken: keep only each block's input and recompute
   * the block in the backward pass. tfjs otherwise keeps (on wasm: copies) every tensor its
   * gradients need, about 130 KB per token per layer at hidden 576; this keeps one
   * [tokens, hidden] per layer, for roughly a third more compute.
   */
  checkpoint?: boolean;
  /** Explicit positions (the ONNX graph's `position_ids`); default: count of real tokens before each. */
  positionIds?: number[][];
}

/** [row in the batch, position in that row]: where the caller wants logits. */
export type SelectedPosition = readonly [row: number, position: number];

export interface CausalLMOptions {
  /** Make every base weight a trainable variable (full-parameter training); default frozen constants. */
  trainBase?: boolean;
  adapter?: LoraLayers | null;
  /** Names the weights' origin (e.g. the model directory) in error messages. */
  source?: string;
}

export class CausalLM {
  readonly trainBase: boolean;
  /** Hugging Face name -> tensor in compute layout (see `heldTransposed`). */
  private readonly weights = new Map<string, tf.Tensor>();
  private readonly shapes: Map<string, number[]>;
  private loraLayers: LoraLayers | null = null;

  constructor(
    readonly config: ModelConfig,
    weights: WeightMap,
    options: CausalLMOptions = {},
  ) {
    const source = options.source ?? "weight map";
    checkWeights(config, weights, source);
    this.shapes = expectedWeights(config);
    const bytes = [...this.shapes.values()].reduce((sum, shape) => sum + 4 * shape.reduce((a, b) => a * b, 1), 0);
    checkWeightsFitBackend(bytes, source);
    this.trainBase = options.trainBase === true;
    for (const [name, shape] of this.shapes) {
      const value = tf.tidy(() => {
        const t = tf.tensor(weights.get(name)!.data, shape, "float32");
        return heldTransposed(config, name) ? tf.transpose(t) : t;
      });
      this.weights.set(name, this.trainBase ? tf.variable(value, true) : value);
      if (this.trainBase) value.dispose();
    }
    if (options.adapter) this.useAdapter(options.adapter);
  }

  get adapter(): LoraLayers | null {
    return this.loraLayers;
  }

  /** Attaches (or with null detaches) LoRA layers; they stay owned by the caller. */
  useAdapter(adapter: LoraLayers | null): void {
    if (adapter) {
      for (const name of adapter.targets()) {
        const base = this.shapes.get(name);
        const shape = adapter.shapeOf(name)!;
        if (!base || base[0] !== shape.b[0] || base[1] !== shape.a[1]) {
          throw new ModelFormatError("LoRA adapter", `pair for ${name} does not fit this model's weight [${base?.join(", ") ?? "missing"}]`);
        }
      }
    }
    this.loraLayers = adapter;
  }

  /** A base weight in compute layout: [in, out] for projections (see `heldTransposed`). */
  weight(name: string): tf.Tensor {
    const w = this.weights.get(name);
    if (!w) throw new Error(`model has no weight ${name}`);
    return w;
  }

  /** Logits [batch, seq, vocab] at every position. */
  forward(inputIds: number[][], attentionMask?: number[][], options: ForwardOptions = {}): tf.Tensor3D {
    const batch = this.batchOf(inputIds, attentionMask, options);
    return tf.tidy(() => {
      const logits = lmHead(this, this.finalHidden(batch, options));
      return tf.reshape(logits, [batch.batch, batch.seq, this.config.vocabSize]);
    });
  }

  /**
   * Logits [positions.length, vocab] at the chosen positions only: the trainer's loss reads
   * a few positions per sequence, and full-vocabulary logits everywhere would dominate memory.
   */
  logitsAt(inputIds: number[][], attentionMask: number[][] | undefined, positions: readonly SelectedPosition[], options: ForwardOptions = {}): tf.Tensor2D {
    const batch = this.batchOf(inputIds, attentionMask, options);
    const { seq } = batch;
    const rows = positions.map(([b, t], i) => {
      if (!Number.isInteger(b) || !Number.isInteger(t) || b < 0 || b >= batch.batch || t < 0 || t >= seq) {
        throw new ModelInputError("positions", `[${i}] = [${b}, ${t}] is outside the batch [${batch.batch}, ${seq}]`);
      }
      return b * seq + t;
    });
    return tf.tidy(() => lmHead(this, gatherRows(this.finalHidden(batch, options), rows)));
  }

  /** What an optimizer should update: the adapter's A and B, plus every weight when trainBase. */
  trainableVariables(): tf.Variable[] {
    return this.variablesWhere(() => true);
  }

  /** The trainable variables among the weights (and adapter pairs) whose names pass `which`. */
  variablesWhere(which: (name: string) => boolean): tf.Variable[] {
    const base = this.trainBase ? [...this.weights].filter(([name]) => which(name)).map(([, w]) => w as tf.Variable) : [];
    return [...base, ...(this.loraLayers?.variables(which) ?? [])];
  }

  /** A copy of the current base weights (after full-parameter training, the trained ones). */
  exportWeights(): WeightMap {
    const out: WeightMap = new Map();
    for (const [name, w] of this.weights) {
      const hf = heldTransposed(this.config, name) ? tf.transpose(w) : w;
      out.set(name, { shape: [...hf.shape], data: (hf.dataSync() as Float32Array).slice() });
      if (hf !== w) hf.dispose();
    }
    return out;
  }

  /** Frees the base weights; an attached adapter is the caller's to dispose. */
  dispose(): void {
    for (const w of this.weights.values()) w.dispose();
    this.weights.clear();
  }

  private batchOf(inputIds: number[][], attentionMask: number[][] | undefined, options: ForwardOptions): Batch {
    return prepareBatch(inputIds, attentionMask, this.config.vocabSize, options.positionIds);
  }

  /** [batch * seq, hidden] after the final norm. */
  private finalHidden(batch: Batch, options: ForwardOptions): tf.Tensor2D {
    const { numLayers, rmsNormEps } = this.config;
    const pass: Pass = {
      model: this,
      inputs: batch,
      batch: batch.batch,
      seq: batch.seq,
      dropoutPass: options.training === true && this.loraLayers ? this.loraLayers.beginPass() : null,
      checkpoint: options.checkpoint === true,
      ...positionTensors(this.config, batch),
    };
    let x = embed(this, batch.ids);
    // A scope per block frees its intermediates as soon as it returns (tfjs keeps what the
    // backward pass needs on its tape), instead of holding every layer's until the end.
    for (let layer = 0; layer < numLayers; layer++) {
      const input = x;
      x = tf.tidy(() => (pass.checkpoint ? checkpointedBlock(pass, layer, input) : block(pass, layer, input)));
    }
    return rmsNorm(x, this.weight("model.norm.weight"), rmsNormEps);
  }
}

/** What every block of one forward pass shares. */
interface Pass {
  model: CausalLM;
  inputs: Batch;
  batch: number;
  seq: number;
  /** LoRA dropout's pass number when training, else null. */
  dropoutPass: number | null;
  checkpoint: boolean;
  rope: RopeTables;
  /** [batch, 1, seq, seq] additive causal + padding mask. */
  bias: tf.Tensor4D;
}

/** RoPE tables and attention bias: built from the batch, so a recomputing backward can rebuild them. */
function positionTensors(config: ModelConfig, batch: Batch): Pick<Pass, "rope" | "bias"> {
  return {
    rope: ropeTables(batch.positions, batch.batch, batch.seq, config.headDim, config.ropeTheta),
    bias: tf.tensor4d(attentionBias(batch), [batch.batch, 1, batch.seq, batch.seq]),
  };
}

function block(pass: Pass, layer: number, x: tf.Tensor2D): tf.Tensor2D {
  const { model } = pass;
  const p = layerPrefix(layer);
  const eps = model.config.rmsNormEps;
  const h = tf.add<tf.Tensor2D>(x, attention(pass, layer, rmsNorm(x, model.weight(`${p}.input_layernorm.weight`), eps)));
  return tf.add<tf.Tensor2D>(h, mlp(pass, layer, rmsNorm(h, model.weight(`${p}.post_attention_layernorm.weight`), eps)));
}

/**
 * block(x) whose backward recomputes it from x instead of reading saved intermediates. The
 * forward of a custom-gradient op is not taped, so nothing but x is kept; the gradient
 * re-runs the block under a tape for d/dx and d/d(this layer's trainable variables). The
 * pass's RoPE and mask tensors are gone by then (freed with the forward), so it rebuilds them.
 */
function checkpointedBlock(pass: Pass, layer: number, x: tf.Tensor2D): tf.Tensor2D {
  const prefix = `${layerPrefix(layer)}.`;
  const params = pass.model.variablesWhere((name) => name.startsWith(prefix));
  const run = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const input = args[0] as tf.Tensor2D;
    save([input]);
    return {
      value: block(pass, layer, input),
      // The block reads its variables from the model; they are the same tensors as `params`.
      gradFunc: (dy: tf.Tensor, [saved]: tf.Tensor[]) => {
        const replay: Pass = { ...pass, ...positionTensors(pass.model.config, pass.inputs) };
        return gradsDuringBackward((again) => tf.sum(tf.mul(block(replay, layer, again as tf.Tensor2D), dy)), [saved, ...params]);
      },
    };
  });
  return run(x, ...params) as tf.Tensor2D;
}

/**
 * tf.grads(f)(xs) from inside another gradient's backward pass. tfjs 4.22 keeps one active
 * tape in its engine state; a gradient taken during a backward pass would replace the outer
 * tape and then clear it, so the outer one is set aside and put back. The inner gradient
 * runs as a top-level one and frees what it saved as soon as it is done, which is the point
 * of recomputing. (Engine internals: tfjs is pinned, and the checkpoint test guards this.)
 */
function gradsDuringBackward(f: (x: tf.Tensor) => tf.Scalar, xs: tf.Tensor[]): tf.Tensor[] {
  const state = (tf.engine() as unknown as { state: { activeTape: unknown; gradientDepth: number } }).state;
  const outer = { tape: state.activeTape, depth: state.gradientDepth };
  state.activeTape = null;
  state.gradientDepth = 0;
  try {
    return tf.grads((...args: tf.Tensor[]) => f(args[0]))(xs);
  } finally {
    state.activeTape = outer.tape;
    state.gradientDepth = outer.depth;
  }
}

/** x / sqrt(mean(x^2) + eps) * weight, over the hidden axis. */
function rmsNorm(x: tf.Tensor2D, weight: tf.Tensor, eps: number): tf.Tensor2D {
  const meanSquare = tf.mean(tf.square(x), -1, true);
  return tf.mul<tf.Tensor2D>(tf.mul(x, tf.rsqrt(tf.add(meanSquare, eps))), weight);
}

/** Token rows of the embedding (held [hidden, vocab] when tied to the output projection). */
function embed(model: CausalLM, ids: Int32Array): tf.Tensor2D {
  const table = model.weight("model.embed_tokens.weight") as tf.Tensor2D;
  return model.config.tieWordEmbeddings ? gatherColumns(table, ids) : gatherRows(table, ids);
}

/** x·w for a held [in, out] weight; frozen weights get no gradient computed. */
function project(model: CausalLM, x: tf.Tensor2D, weight: tf.Tensor): tf.Tensor2D {
  return model.trainBase ? matMul(x, weight) : matMulFrozen(x, weight);
}

/** x W^T (+ b) (+ the LoRA term when the adapter targets this module). */
function linear(pass: Pass, layer: number, module: LinearModule, x: tf.Tensor2D): tf.Tensor2D {
  const { model } = pass;
  const name = linearWeightName(layer, module);
  let y = project(model, x, model.weight(name));
  if (model.config.attentionBias && (module === "q_proj" || module === "k_proj" || module === "v_proj")) {
    y = tf.add(y, model.weight(name.replace(/weight$/, "bias")));
  }
  const lora = model.adapter?.delta(name, x, pass.dropoutPass);
  return lora ? tf.add(y, lora) : y;
}

function attention(pass: Pass, layer: number, x: tf.Tensor2D): tf.Tensor2D {
  const { numHeads, numKvHeads } = pass.model.config;
  const q = applyRope(splitHeads(pass, linear(pass, layer, "q_proj", x), numHeads), pass.rope);
  const k = applyRope(splitHeads(pass, linear(pass, layer, "k_proj", x), numKvHeads), pass.rope);
  const v = splitHeads(pass, linear(pass, layer, "v_proj", x), numKvHeads);
  return linear(pass, layer, "o_proj", mergeHeads(pass, groupedQueryAttention(q, k, v, pass.bias)));
}

/** [batch * seq, heads * headDim] -> [batch, heads, seq, headDim]. */
function splitHeads({ batch, seq, model }: Pass, x: tf.Tensor2D, heads: number): tf.Tensor4D {
  return tf.transpose(tf.reshape(x, [batch, seq, heads, model.config.headDim]), [0, 2, 1, 3]);
}

function mergeHeads({ batch, seq }: Pass, y: tf.Tensor4D): tf.Tensor2D {
  const [, heads, , headDim] = y.shape;
  return tf.reshape(tf.transpose(y, [0, 2, 1, 3]), [batch * seq, heads * headDim]);
}

/**
 * softmax(q k^T / sqrt(d) + bias) v, where query head h reads KV head h / group. The group
 * is folded into the query axis ([b, kv, group * seq, d]) so one batched matMul serves all
 * heads of a group without repeating K and V in memory.
 */
function groupedQueryAttention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, bias: tf.Tensor4D): tf.Tensor4D {
  const [batch, heads, seq, headDim] = q.shape;
  const kvHeads = k.shape[1];
  const grouped = tf.reshape(q, [batch, kvHeads, (heads / kvHeads) * seq, headDim]);
  const scores = tf.mul(matMul(grouped, transposeLast(k)), 1 / Math.sqrt(headDim));
  const probs = tf.softmax(tf.add(tf.reshape(scores, [batch, heads, seq, seq]), bias));
  const out = matMul(tf.reshape(probs, [batch, kvHeads, (heads / kvHeads) * seq, seq]), v);
  return tf.reshape(out, [batch, heads, seq, headDim]);
}

/** down(silu(gate(x)) * up(x)). */
function mlp(pass: Pass, layer: number, x: tf.Tensor2D): tf.Tensor2D {
  const gate = linear(pass, layer, "gate_proj", x);
  const silu = tf.mul(gate, tf.sigmoid(gate));
  return linear(pass, layer, "down_proj", tf.mul(silu, linear(pass, layer, "up_proj", x)));
}

/** hidden [n, hidden] -> logits [n, vocab] through lm_head or the tied embedding. */
function lmHead(model: CausalLM, hidden: tf.Tensor2D): tf.Tensor2D {
  return project(model, hidden, model.weight(lmHeadName(model.config)));
}

/** Projections and the output head are held [in, out]; a tied embedding is the output head. */
function heldTransposed(config: ModelConfig, name: string): boolean {
  return name === lmHeadName(config) || /\.(q|k|v|o|gate|up|down)_proj\.weight$/.test(name);
}

/** Every tensor the config implies is present with its shape; extra tensors are ignored. */
export function checkWeights(config: ModelConfig, weights: WeightMap, source: string): void {
  for (const [name, shape] of expectedWeights(config)) {
    const t = weights.get(name);
    if (!t) throw new ModelFormatError(source, `tensor ${name} is missing`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new ModelFormatError(source, `tensor ${name} has shape [${t.shape.join(", ")}], config implies [${shape.join(", ")}]`);
    }
    if (t.data.length !== shape.reduce((a, b) => a * b, 1)) {
      throw new ModelFormatError(source, `tensor ${name} holds ${t.data.length} values, its shape needs ${shape.reduce((a, b) => a * b, 1)}`);
    }
  }
}
