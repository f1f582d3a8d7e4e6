// The llama/qwen2 causal LM as an ONNX graph, block for block beside the TensorFlow.js
// forward: embeddings, then per layer RMSNorm -> attention (RoPE, grouped-query, KV cache)
// -> residual -> RMSNorm -> SwiGLU MLP -> residual, then the final norm and the LM head.
// Inputs and outputs carry the Optimum causal-LM names so other ONNX tooling can drive it,
// plus three of our own:
// - `num_logits_to_keep` (int64 scalar, HF's meaning): the head and the log-softmax run only
//   at the last N new positions (0: all), so a prefill pays the 896 x 151,936 head once, not
//   once per prompt token;
// - `log_probs`: LogSoftmax over the kept logits, so no per-step loop over the vocabulary is
//   left to JavaScript. It is the served graph's only distribution output: ONNX Runtime
//   computes every output whether fetched or not, and a Reshape into an output is a copy,
//   so a `logits` output beside it cost a [batch, kept, vocab] copy per step and that buffer
//   in the arena, for nothing the service reads (every caller wants log-probabilities).
//   `logits` stays an output of the standalone export (outside tools read Optimum's name);
// - `new_key_values.{layer}.key|value` [batch, kv_heads, new, head_dim] instead of Optimum's
//   `present` (past and new together): only the new positions' keys and values leave the graph,
//   because onnxruntime-node copies every output into a fresh JavaScript buffer, and the whole
//   present at batch 64 was the larger part of a 0.5B decode step's copies. The runtime keeps
//   the batch's past itself (batch-kv.ts); past slots may be left unused anywhere (a row
//   shorter than the batch's past), attention_mask says which hold a token;
// - `lora_a.{layer}.{module}` [in, rank], `lora_b...` [rank, out] and one `lora_mask`
//   [lora_rows, 1, rank]: each adapted projection adds the low-rank branch ((x A) * mask) B
//   to x W^T, so one session serves the base model (rank 0) and any adapter. Several
//   adapters in one batch are fed side by side along the rank axis, and the mask row of each
//   batch row keeps only its own adapter's columns (lora_rows = batch; 1 when every row
//   shares one adapter): no per-row copy of any factor, a few extra rank columns of work.
// Linear weights stay in PyTorch's [out, in] layout (Gemm with transB), so they can be read
// by ONNX Runtime straight from the safetensors file, untouched by JavaScript.
//
// Attention uses the opset 23 `Attention` operator with an additive mask built in the graph
// from `attention_mask` and causality, rather than `is_causal`: a row's past may have unused
// slots and its new tokens may be left padded, and an unused slot must never be seen.
import type { ModelConfig } from "#core/model/config.ts";
import { ModelFormatError } from "#core/model/errors.ts";
import type { LinearModule } from "#core/model/weights.ts";
import { LINEAR_MODULES, expectedWeights, layerPrefix, linearShape, linearWeightName, lmHeadName } from "#core/model/weights.ts";
import type { FileSlice } from "#core/formats/onnx-builder.ts";
import { GraphBuilder, float, int, ints, isFileSlice } from "#core/formats/onnx-builder.ts";

export { OPSET_VERSION } from "#core/formats/onnx-file.ts";

/** Names of the dynamic axes, shared by the graph's inputs and outputs. */
export const AXES = {
  batch: "batch_size",
  sequence: "sequence_length",
  past: "past_sequence_length",
  total: "total_sequence_length",
  kept: "kept_sequence_length",
  loraRows: "lora_rows",
  loraRank: "lora_rank",
} as const;

export const NUM_LOGITS_TO_KEEP = "num_logits_to_keep";
export const LOG_PROBS = "log_probs";
export const LOGITS = "logits";

export const pastKeyName = (layer: number) => `past_key_values.${layer}.key`;
export const pastValueName = (layer: number) => `past_key_values.${layer}.value`;
export const newKeyName = (layer: number) => `new_key_values.${layer}.key`;
export const newValueName = (layer: number) => `new_key_values.${layer}.value`;
export const loraAName = (layer: number, module: LinearModule) => `lora_a.${layer}.${module}`;
export const loraBName = (layer: number, module: LinearModule) => `lora_b.${layer}.${module}`;
export const LORA_MASK = "lora_mask";

/** A weight as the graph takes it: float32 values in memory, or where they lie in a file. */
export interface GraphWeight {
  shape: number[];
  data: Float32Array | FileSlice;
}
/** Hugging Face name -> weight; a WeightMap is one. */
export type GraphWeights = ReadonlyMap<string, GraphWeight>;

export interface GraphOptions {
  /** Projections that get a LoRA side branch (graph inputs); default all of them, none for a standalone export. */
  loraModules?: readonly LinearModule[];
  /**
   * "kept" (default): num_logits_to_keep cuts the kept positions before the final norm and the
   * head, as above. "every position": the final norm and the head run at every new position,
   * as a Hugging Face forward pass computes them, and the kept positions are cut from those
   * logits; the same inputs and outputs. Kept to measure the reference scripts' way of
   * scoring (bench section "amateur"), not served.
   */
  head?: "kept" | "every position";
  /**
   * Also give the kept logits as an output (Optimum's `logits`, for tools outside this
   * project; export-onnx sets it). Off for the served graph, whose callers read only
   * log_probs: an output costs a copy every step.
   */
  logitsOutput?: boolean;
}

/** Added to the score of a masked key. Finite, so a row with every key masked (a leading
 *  pad) averages instead of producing NaN that would reach the cache of the next layer. */
const MASKED_SCORE = -3.4028234663852886e38;

interface Context {
  g: GraphBuilder;
  config: ModelConfig;
  weights: GraphWeights;
  loraModules: readonly LinearModule[];
  /** The lora_mask input, shared by every side branch; null without LoRA inputs. */
  loraMask: string | null;
  /** [batch, new] of input_ids; linear() reshapes its 2-D result back to [batch, new, out]. */
  rows: string;
  rowShapes: Map<number, string>;
}

/** Checks that every tensor the config implies is present with its shape. */
export function checkWeights(config: ModelConfig, weights: GraphWeights, source = "weights"): void {
  for (const [name, shape] of expectedWeights(config)) {
    const tensor = weights.get(name);
    if (!tensor) throw new ModelFormatError(source, `tensor ${name} is missing`);
    if (tensor.shape.length !== shape.length || tensor.shape.some((d, i) => d !== shape[i])) {
      throw new ModelFormatError(source, `tensor ${name} has shape [${tensor.shape.join(", ")}], the config implies [${shape.join(", ")}]`);
    }
    const count = shape.reduce((a, b) => a * b, 1);
    const held = isFileSlice(tensor.data) ? tensor.data.byteLength / 4 : tensor.data.length;
    if (held !== count) {
      throw new ModelFormatError(source, `tensor ${name} holds ${held} values, its shape needs ${count}`);
    }
  }
}

/** The named weight as an initializer of the graph (registered once, shared by every use). */
function weight(ctx: Context, name: string): string {
  const t = ctx.weights.get(name);
  if (!t) throw new ModelFormatError("weights", `tensor ${name} is missing`);
  if (!ctx.g.initializers.some((i) => i.name === name)) ctx.g.weight(name, t.shape, t.data);
  return name;
}

/** [batch, new, size], the shape linear() gives back, built once per size. */
function rowShape(ctx: Context, size: number): string {
  let shape = ctx.rowShapes.get(size);
  if (!shape) {
    shape = ctx.g.op("Concat", [ctx.rows, ctx.g.int64([size])], { axis: int(0) });
    ctx.rowShapes.set(size, shape);
  }
  return shape;
}

/** x W^T (+ bias) through Gemm on the [batch * new, in] view, plus scale * (x A) B where LoRA applies. */
function linear(ctx: Context, x: string, layer: number, module: LinearModule, withBias: boolean): string {
  const { g } = ctx;
  const name = linearWeightName(layer, module);
  const [out, inFeatures] = linearShape(ctx.config, module);
  const inputs = [g.op("Reshape", [x, g.int64([-1, inFeatures])]), weight(ctx, name)];
  if (withBias) inputs.push(weight(ctx, name.replace(/\.weight$/, ".bias")));
  const y = g.op("Reshape", [g.op("Gemm", inputs, { transB: int(1) }, { name: `${layerPrefix(layer)}.${module}` }), rowShape(ctx, out)]);
  if (!ctx.loraModules.includes(module)) return y;
  // The adapter's scale is folded into lora_b by whoever feeds it.
  const a = g.input(loraAName(layer, module), "float32", [inFeatures, AXES.loraRank]);
  const b = g.input(loraBName(layer, module), "float32", [AXES.loraRank, out]);
  const down = g.op("Mul", [g.op("MatMul", [x, a]), ctx.loraMask!]);
  const side = g.op("MatMul", [down, b], {}, { name: `${layerPrefix(layer)}.${module}.lora` });
  return g.op("Add", [y, side]);
}

function rmsNorm(ctx: Context, x: string, weightName: string): string {
  return ctx.g.op("RMSNormalization", [x, weight(ctx, weightName)], { axis: int(-1), epsilon: float(ctx.config.rmsNormEps), stash_type: int(1) });
}

/** Additive mask [batch, 1, new, total]: 0 where a new token may see a key, MASKED_SCORE elsewhere. */
function attentionBias(ctx: Context, inputIds: string, attentionMask: string): string {
  const { g } = ctx;
  const zero = g.int64([0], []);
  const one = g.int64([1], []);
  const total = g.op("Squeeze", [g.op("Shape", [attentionMask], { start: int(1), end: int(2) }), g.int64([0])]);
  const fresh = g.op("Squeeze", [g.op("Shape", [inputIds], { start: int(1), end: int(2) }), g.int64([0])]);
  const past = g.op("Sub", [total, fresh]);
  const keyIndex = g.op("Range", [zero, total, one]); // [total]
  const queryIndex = g.op("Unsqueeze", [g.op("Range", [past, total, one]), g.int64([1])]); // [new, 1]
  const causal = g.op("LessOrEqual", [keyIndex, queryIndex]); // [new, total]
  const present = g.op("Unsqueeze", [g.op("Cast", [attentionMask], { to: int(9) }), g.int64([1, 2])]); // bool [batch, 1, 1, total]
  const visible = g.op("And", [causal, present]);
  return g.op("Where", [visible, g.float32([0], []), g.float32([MASKED_SCORE], [])], {}, { name: "attention_bias" });
}

/** cos and sin of position * inverse frequency, [batch, new, head_dim / 2], in float32 like HF. */
function rotaryTables(ctx: Context, positionIds: string): { cos: string; sin: string } {
  const { g, config } = ctx;
  const half = config.headDim / 2;
  const invFreq = Array.from({ length: half }, (_, i) => 1 / config.ropeTheta ** ((2 * i) / config.headDim));
  const positions = g.op("Unsqueeze", [g.op("Cast", [positionIds], { to: int(1) }), g.int64([2])]);
  const angles = g.op("Mul", [positions, g.float32(invFreq)]);
  return { cos: g.op("Cos", [angles], {}, { name: "rope_cos" }), sin: g.op("Sin", [angles], {}, { name: "rope_sin" }) };
}

/**
 * Grouped-query attention of the new positions over the past and over themselves, as two
 * blocks of scores side by side: the past is read where it lies and never concatenated
 * with the new keys (ONNX Runtime's Attention kernel copied the whole past into its present
 * every step, a tenth of a 0.5B decode step at batch 64). Each KV head's query heads are
 * stacked as rows, [batch, kv_heads, group * new, head_dim], so one batched product serves
 * the group.
 */
function attention(ctx: Context, x: string, layer: number, bias: string, rope: { cos: string; sin: string }): string {
  const { g, config } = ctx;
  const { numHeads: heads, numKvHeads: kvHeads, headDim: d } = config;
  const group = heads / kvHeads;
  const withBias = config.attentionBias;
  let q = linear(ctx, x, layer, "q_proj", withBias); // [batch, new, heads * head_dim]
  let k = linear(ctx, x, layer, "k_proj", withBias);
  const v = linear(ctx, x, layer, "v_proj", withBias);
  // interleaved=0 is the rotate_half convention of the HF llama/qwen2 code.
  q = g.op("RotaryEmbedding", [q, rope.cos, rope.sin], { num_heads: int(heads), interleaved: int(0) });
  k = g.op("RotaryEmbedding", [k, rope.cos, rope.sin], { num_heads: int(kvHeads), interleaved: int(0) });
  // The new positions' keys and values in the cache's [batch, kv_heads, new, head_dim] layout: graph outputs, and this step's own keys.
  const kvLayout = (t: string, output: string) => g.op("Transpose", [g.op("Reshape", [t, g.int64([0, 0, kvHeads, d])])], { perm: ints([0, 2, 1, 3]) }, { outputs: [output] });
  const newKeys = kvLayout(k, newKeyName(layer));
  const newValues = kvLayout(v, newValueName(layer));

  // [batch, new, kv_heads, group, head_dim] -> [batch, kv_heads, group * new, head_dim], pre-scaled.
  const grouped = g.op("Transpose", [g.op("Reshape", [q, g.int64([0, 0, kvHeads, group, d])])], { perm: ints([0, 2, 3, 1, 4]) });
  const rows = g.op("Mul", [g.op("Reshape", [grouped, g.int64([0, kvHeads, -1, d])]), g.float32([1 / Math.sqrt(d)], [])]);
  const keysT = (keys: string) => g.op("Transpose", [keys], { perm: ints([0, 1, 3, 2]) });
  const scores = g.op("Concat", [g.op("MatMul", [rows, keysT(pastKeyName(layer))]), g.op("MatMul", [rows, keysT(newKeys)])], { axis: int(-1) }); // [batch, kv_heads, group * new, total]
  // The bias [batch, 1, new, total] applies alike to every head of a group.
  const total = g.op("Shape", [scores], { start: int(3), end: int(4) });
  const perHead = g.op("Reshape", [scores, g.op("Concat", [g.int64([0, kvHeads, group, -1]), total], { axis: int(0) })]);
  const probabilities = g.op("Softmax", [g.op("Add", [perHead, g.op("Unsqueeze", [bias, g.int64([2])])])], { axis: int(-1) });
  const weights = g.op("Reshape", [probabilities, g.op("Concat", [g.int64([0, kvHeads, -1]), total], { axis: int(0) })]);
  const past = g.op("Shape", [pastKeyName(layer)], { start: int(2), end: int(3) });
  const big = g.int64([Number.MAX_SAFE_INTEGER]);
  const axis = g.int64([3]);
  const fromPast = g.op("MatMul", [g.op("Slice", [weights, g.int64([0]), past, axis]), pastValueName(layer)]);
  const fromNew = g.op("MatMul", [g.op("Slice", [weights, past, big, axis]), newValues]);
  const mixed = g.op("Add", [fromPast, fromNew], {}, { name: `${layerPrefix(layer)}.attention` }); // [batch, kv_heads, group * new, head_dim]
  // Back to [batch, new, heads * head_dim], head h = kv head h / group, member h % group.
  const y = g.op("Reshape", [g.op("Transpose", [g.op("Reshape", [mixed, g.int64([0, kvHeads, group, -1, d])])], { perm: ints([0, 3, 1, 2, 4]) }), g.int64([0, 0, heads * d])]);
  return linear(ctx, y, layer, "o_proj", false);
}

function mlp(ctx: Context, x: string, layer: number): string {
  const { g } = ctx;
  const gate = linear(ctx, x, layer, "gate_proj", false);
  const up = linear(ctx, x, layer, "up_proj", false);
  const silu = g.op("Mul", [gate, g.op("Sigmoid", [gate])]);
  return linear(ctx, g.op("Mul", [silu, up]), layer, "down_proj", false);
}

function block(ctx: Context, x: string, layer: number, bias: string, rope: { cos: string; sin: string }): string {
  const p = layerPrefix(layer);
  const h = ctx.g.op("Add", [x, attention(ctx, rmsNorm(ctx, x, `${p}.input_layernorm.weight`), layer, bias, rope)]);
  return ctx.g.op("Add", [h, mlp(ctx, rmsNorm(ctx, h, `${p}.post_attention_layernorm.weight`), layer)]);
}

/**
 * The head's matrix. A tied head read from a file gets an initializer of its own over the same
 * bytes: ONNX Runtime then prepacks it for Gemm and drops that mapping, while the embedding's
 * own mapping is only touched at the rows Gather reads, instead of the whole matrix staying
 * resident twice (packed and mapped).
 */
function headWeight(ctx: Context): string {
  const name = lmHeadName(ctx.config);
  const embed = ctx.weights.get("model.embed_tokens.weight");
  if (name === "lm_head.weight" || !embed || !isFileSlice(embed.data)) return weight(ctx, name);
  return ctx.g.weight("lm_head.weight", embed.shape, embed.data);
}

/**
 * The last `num_logits_to_keep` positions (all when 0) through the final norm and the head:
 * logits = x W^T through Gemm(transB), so a tied head shares the embedding matrix as stored,
 * and their log-softmax. With `everyPosition` the norm and the head see every position and
 * the kept ones are cut from the logits.
 */
function lmHead(ctx: Context, x: string, keep: string, { logitsOutput, everyPosition }: { logitsOutput: boolean; everyPosition: boolean }): void {
  const { g, config } = ctx;
  const named = logitsOutput ? { outputs: [LOGITS] } : {};
  const cut = (t: string, opts: { outputs?: string[] } = {}) =>
    g.op("Slice", [t, g.op("Neg", [g.op("Unsqueeze", [keep, g.int64([0])])]), g.int64([Number.MAX_SAFE_INTEGER]), g.int64([1])], {}, { name: "keep_logits", ...opts });
  const headed = everyPosition ? x : cut(x);
  const normed = rmsNorm(ctx, headed, "model.norm.weight");
  const flat = g.op("Reshape", [normed, g.int64([-1, config.hiddenSize])]);
  const scores = g.op("Gemm", [flat, headWeight(ctx)], { transB: int(1) }, { name: "lm_head" });
  const shape = g.op("Concat", [g.op("Shape", [headed], { start: int(0), end: int(2) }), g.int64([config.vocabSize])], { axis: int(0) });
  // An internal Reshape is an alias of the Gemm's result; one into an output is a copy. Where
  // logits are an output the log-softmax reads that output, so there is one copy, not two.
  const logits = everyPosition ? cut(g.op("Reshape", [scores, shape]), named) : g.op("Reshape", [scores, shape], {}, named);
  g.op("LogSoftmax", [logits], { axis: int(-1) }, { outputs: [LOG_PROBS] });
}

/** The whole causal LM; `weights` must hold every tensor expectedWeights(config) lists. */
export function buildCausalLmGraph(config: ModelConfig, weights: GraphWeights, source = "weights", options: GraphOptions = {}): GraphBuilder {
  checkWeights(config, weights, source);
  const g = new GraphBuilder();
  const { batch, sequence, past, total, kept } = AXES;
  const kvDims = (axis: string) => [batch, config.numKvHeads, axis, config.headDim];

  const inputIds = g.input("input_ids", "int64", [batch, sequence]);
  const attentionMask = g.input("attention_mask", "int64", [batch, total]);
  const positionIds = g.input("position_ids", "int64", [batch, sequence]);
  for (let i = 0; i < config.numLayers; i++) {
    g.input(pastKeyName(i), "float32", kvDims(past));
    g.input(pastValueName(i), "float32", kvDims(past));
  }
  const keep = g.input(NUM_LOGITS_TO_KEEP, "int64", []);
  const loraModules = options.loraModules ?? LINEAR_MODULES;
  const loraMask = loraModules.length > 0 ? g.input(LORA_MASK, "float32", [AXES.loraRows, 1, AXES.loraRank]) : null;
  const ctx: Context = { g, config, weights, loraModules, loraMask, rows: g.op("Shape", [inputIds]), rowShapes: new Map() };

  let x = g.op("Gather", [weight(ctx, "model.embed_tokens.weight"), inputIds], { axis: int(0) }, { name: "embed_tokens" });
  const bias = attentionBias(ctx, inputIds, attentionMask);
  const rope = rotaryTables(ctx, positionIds);
  for (let i = 0; i < config.numLayers; i++) x = block(ctx, x, i, bias, rope);
  const logitsOutput = options.logitsOutput === true;
  lmHead(ctx, x, keep, { logitsOutput, everyPosition: options.head === "every position" });

  if (logitsOutput) g.output(LOGITS, LOGITS, "float32", [batch, kept, config.vocabSize]);
  g.output(LOG_PROBS, LOG_PROBS, "float32", [batch, kept, config.vocabSize]);
  for (let i = 0; i < config.numLayers; i++) {
    g.output(newKeyName(i), newKeyName(i), "float32", kvDims(sequence));
    g.output(newValueName(i), newValueName(i), "float32", kvDims(sequence));
  }
  return g;
}
