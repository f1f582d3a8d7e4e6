// The llama/qwen2 causal LM as an ONNX graph, block for block beside the TensorFlow.js
// forward: embeddings, then per layer RMSNorm -> attention (RoPE, grouped-query, KV cache)
// -> residual -> RMSNorm -> SwiGLU MLP -> residual, then the final norm and the LM head.
// Inputs and outputs carry the Optimum causal-LM names so other ONNX tooling can drive it.
//
// Attention uses the opset 23 `Attention` operator with an additive mask built in the graph
// from `attention_mask` and causality, rather than `is_causal`: the batch rows may be left
// padded, in the cache as well as in the new tokens, and a padded slot must never be seen.
import type { ModelConfig } from "#core/model/config.ts";
import { ModelFormatError } from "#core/model/errors.ts";
import type { Float32Tensor, LinearModule, WeightMap } from "#core/model/weights.ts";
import { expectedWeights, layerPrefix, linearWeightName, lmHeadName } from "#core/model/weights.ts";
import { GraphBuilder, float, int, ints } from "./onnx-builder.ts";

export const OPSET_VERSION = 23;

/** Names of the dynamic axes, shared by the graph's inputs and outputs. */
export const AXES = {
  batch: "batch_size",
  sequence: "sequence_length",
  past: "past_sequence_length",
  total: "total_sequence_length",
} as const;

export const pastKeyName = (layer: number) => `past_key_values.${layer}.key`;
export const pastValueName = (layer: number) => `past_key_values.${layer}.value`;
export const presentKeyName = (layer: number) => `present.${layer}.key`;
export const presentValueName = (layer: number) => `present.${layer}.value`;

/** Added to the score of a masked key. Finite, so a row with every key masked (a leading
 *  pad) averages instead of producing NaN that would reach the cache of the next layer. */
const MASKED_SCORE = -3.4028234663852886e38;

interface Context {
  g: GraphBuilder;
  config: ModelConfig;
  weights: WeightMap;
}

/** Checks that every tensor the config implies is present with its shape. */
export function checkWeights(config: ModelConfig, weights: WeightMap, source = "weights"): void {
  for (const [name, shape] of expectedWeights(config)) {
    const tensor = weights.get(name);
    if (!tensor) throw new ModelFormatError(source, `tensor ${name} is missing`);
    if (tensor.shape.length !== shape.length || tensor.shape.some((d, i) => d !== shape[i])) {
      throw new ModelFormatError(source, `tensor ${name} has shape [${tensor.shape.join(", ")}], the config implies [${shape.join(", ")}]`);
    }
    const count = shape.reduce((a, b) => a * b, 1);
    if (tensor.data.length !== count) {
      throw new ModelFormatError(source, `tensor ${name} holds ${tensor.data.length} values, its shape needs ${count}`);
    }
  }
}

function tensor(ctx: Context, name: string): Float32Tensor {
  const t = ctx.weights.get(name);
  if (!t) throw new ModelFormatError("weights", `tensor ${name} is missing`);
  return t;
}

/** [out, in] (PyTorch) -> [in, out], so MatMul needs no transpose at run time. */
function transposed({ shape: [rows, cols], data }: Float32Tensor): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const row = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = data[row + c];
  }
  return out;
}

function linear(ctx: Context, x: string, layer: number, module: LinearModule, withBias: boolean): string {
  const name = linearWeightName(layer, module);
  const w = tensor(ctx, name);
  const wT = ctx.g.weight(`${name}.T`, [w.shape[1], w.shape[0]], () => transposed(w));
  const y = ctx.g.op("MatMul", [x, wT], {}, { name: `${layerPrefix(layer)}.${module}` });
  if (!withBias) return y;
  const biasName = name.replace(/\.weight$/, ".bias");
  const bias = ctx.g.weight(biasName, [w.shape[0]], tensor(ctx, biasName).data);
  return ctx.g.op("Add", [y, bias]);
}

function rmsNorm(ctx: Context, x: string, weightName: string): string {
  const scale = ctx.g.weight(weightName, [ctx.config.hiddenSize], tensor(ctx, weightName).data);
  return ctx.g.op("RMSNormalization", [x, scale], { axis: int(-1), epsilon: float(ctx.config.rmsNormEps), stash_type: int(1) });
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

function attention(ctx: Context, x: string, layer: number, bias: string, rope: { cos: string; sin: string }): string {
  const { g, config } = ctx;
  const withBias = config.attentionBias;
  let q = linear(ctx, x, layer, "q_proj", withBias); // [batch, new, heads * head_dim]
  let k = linear(ctx, x, layer, "k_proj", withBias);
  const v = linear(ctx, x, layer, "v_proj", withBias);
  // interleaved=0 is the rotate_half convention of the HF llama/qwen2 code.
  q = g.op("RotaryEmbedding", [q, rope.cos, rope.sin], { num_heads: int(config.numHeads), interleaved: int(0) });
  k = g.op("RotaryEmbedding", [k, rope.cos, rope.sin], { num_heads: int(config.numKvHeads), interleaved: int(0) });
  const [y] = g.opMulti(
    "Attention",
    [q, k, v, bias, pastKeyName(layer), pastValueName(layer)],
    { q_num_heads: int(config.numHeads), kv_num_heads: int(config.numKvHeads), scale: float(1 / Math.sqrt(config.headDim)), is_causal: int(0) },
    { name: `${layerPrefix(layer)}.attention`, outputs: [1, presentKeyName(layer), presentValueName(layer)] },
  );
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

/** logits = x W^T through Gemm(transB), so a tied head shares the embedding matrix as stored. */
function lmHead(ctx: Context, x: string, inputIds: string): string {
  const { g, config } = ctx;
  const name = lmHeadName(config);
  const head = name === "lm_head.weight" ? g.weight(name, [config.vocabSize, config.hiddenSize], tensor(ctx, name).data) : name;
  const flat = g.op("Reshape", [x, g.int64([-1, config.hiddenSize])]);
  const scores = g.op("Gemm", [flat, head], { transB: int(1) });
  const shape = g.op("Concat", [g.op("Shape", [inputIds]), g.int64([config.vocabSize])], { axis: int(0) });
  return g.op("Reshape", [scores, shape], {}, { outputs: ["logits"] });
}

/** The whole causal LM; `weights` must hold every tensor expectedWeights(config) lists. */
export function buildCausalLmGraph(config: ModelConfig, weights: WeightMap, source = "weights"): GraphBuilder {
  checkWeights(config, weights, source);
  const g = new GraphBuilder();
  const ctx: Context = { g, config, weights };
  const { batch, sequence, past, total } = AXES;
  const kvDims = (axis: string) => [batch, config.numKvHeads, axis, config.headDim];

  const inputIds = g.input("input_ids", "int64", [batch, sequence]);
  const attentionMask = g.input("attention_mask", "int64", [batch, total]);
  const positionIds = g.input("position_ids", "int64", [batch, sequence]);
  for (let i = 0; i < config.numLayers; i++) {
    g.input(pastKeyName(i), "float32", kvDims(past));
    g.input(pastValueName(i), "float32", kvDims(past));
  }

  const embed = g.weight("model.embed_tokens.weight", [config.vocabSize, config.hiddenSize], tensor(ctx, "model.embed_tokens.weight").data);
  let x = g.op("Gather", [embed, inputIds], { axis: int(0) }, { name: "embed_tokens" });
  const bias = attentionBias(ctx, inputIds, attentionMask);
  const rope = rotaryTables(ctx, positionIds);
  for (let i = 0; i < config.numLayers; i++) x = block(ctx, x, i, bias, rope);
  x = rmsNorm(ctx, x, "model.norm.weight");
  lmHead(ctx, x, inputIds);

  g.output("logits", "logits", "float32", [batch, sequence, config.vocabSize]);
  for (let i = 0; i < config.numLayers; i++) {
    g.output(presentKeyName(i), presentKeyName(i), "float32", kvDims(total));
    g.output(presentValueName(i), presentValueName(i), "float32", kvDims(total));
  }
  return g;
}
