// The expert's LoRA gradients as ONNX graphs the project writes itself, for ONNX Runtime to
// run: every layer's backward by hand (as llm.c writes its kernels), block for block beside
// the TensorFlow.js forward in transformer.ts, which is their oracle in the tests.
//   block graph, one per layer:
//     forward:  y = h + mlp(rmsNorm(h)),  h = x + attention(rmsNorm(x))
//     backward (only when the `backward` input is true, in an If branch): from dL/dy and the
//       recomputed forward, dL/dx and dL/dA, dL/dB of every LoRA pair of the layer
//   head graph: the embedding lookup, and (If branch) the final norm, the LM head at the loss
//     positions only, the soft-label KL and its gradient back into the residual stream.
// Frozen weights get no gradient (only activations do), so no weight-sized gradient exists.
// ONNX Runtime runs every node of a graph whatever outputs are asked for, hence the If: one
// session per layer serves both the forward and the backward. The frozen weights are graph
// inputs under their Hugging Face names, not initializers: ONNX Runtime reads an input
// tensor in place, so the caller's weight arrays are the only copy of the base (as
// initializers, every session would copy them). They stay in the [out, in] layout: the
// forward is Gemm(x, W, transB) and the backward dx = dy·W, so no transposed copy exists.
import onnxProto from "onnx-proto";
import type { ModelConfig } from "#core/model/config.ts";
import type { LoraSettings } from "#core/model/lora.ts";
import { loraScale } from "#core/model/lora.ts";
import type { LinearModule } from "#core/model/weights.ts";
import { expectedWeights, layerPrefix, linearShape, linearWeightName, lmHeadName } from "#core/model/weights.ts";
import type { Attribute, ElementType } from "#core/formats/onnx-builder.ts";
import { GraphBuilder, ONNX_DATA_TYPE, int, ints } from "#core/formats/onnx-builder.ts";

const { onnx } = onnxProto;

/** Input and output names of a block graph. */
export const BLOCK = {
  x: "x",
  dy: "dy",
  bias: "attention_bias",
  cos: "rope_cos",
  sin: "rope_sin",
  backward: "backward",
  y: "y",
  dx: "dx",
} as const;

/** Input and output names of the head graph. */
export const HEAD = {
  ids: "input_ids",
  embedded: "embedded",
  hidden: "hidden",
  lossRows: "loss_rows",
  labelIds: "label_ids",
  labelWeights: "label_weights",
  lossScale: "loss_scale",
  withLoss: "with_loss",
  crossEntropy: "cross_entropy",
  dHidden: "d_hidden",
} as const;

export const loraInput = (module: LinearModule, which: "A" | "B") => `${module}.lora_${which}`;
export const loraGradient = (module: LinearModule, which: "A" | "B") => `${module}.grad_${which}`;
/** Inverted-dropout factors (0 or 1 / (1 - p)) for the adapter's input, [rows, in]. */
export const dropoutInput = (module: LinearModule) => `${module}.keep`;

export interface LoraGraphSettings extends Pick<LoraSettings, "rank" | "alpha" | "targetModules"> {
  /** Whether the graph takes dropout factors for each adapted module's input. */
  dropout: boolean;
}

/**
 * Emits the nodes of one graph (the main one or an If branch) under a name prefix, with
 * constants kept in the main graph: a branch may read outer values, and names must be
 * unique across both.
 */
class Emitter {
  constructor(
    readonly g: GraphBuilder,
    private readonly main: GraphBuilder,
    private readonly prefix: string,
  ) {}

  op(type: string, inputs: string[], attributes: Record<string, Attribute> = {}): string {
    return this.g.op(type, inputs, attributes, { name: `${this.prefix}_${type}` });
  }

  i64(values: number[], dims?: number[]): string {
    return this.main.int64(values, dims);
  }

  f32(value: number): string {
    return this.main.float32([value], []);
  }

  add(a: string, b: string): string {
    return this.op("Add", [a, b]);
  }

  mul(a: string, b: string): string {
    return this.op("Mul", [a, b]);
  }

  transpose(x: string, perm: number[]): string {
    return this.op("Transpose", [x], { perm: ints(perm) });
  }

  reshape(x: string, shape: string): string {
    return this.op("Reshape", [x, shape]);
  }

  /** Sum over the last axis, kept as size 1. */
  sumLast(x: string): string {
    return this.op("ReduceSum", [x, this.i64([-1])], { keepdims: int(1) });
  }

  meanLast(x: string): string {
    return this.op("ReduceMean", [x, this.i64([-1])], { keepdims: int(1) });
  }
}

/** An If branch under construction: its own builder, outputs declared as it goes. */
function branch(main: GraphBuilder, prefix: string): Emitter {
  return new Emitter(new GraphBuilder(), main, prefix);
}

/**
 * Appends If(cond) to the main graph with outputs `names`: the then-branch's values `then`
 * and the else-branch's `otherwise`, index for index.
 */
function ifNode(main: GraphBuilder, cond: string, names: string[], types: ElementType[], then: Emitter, thenValues: string[], otherwise: Emitter, elseValues: string[]): void {
  // Outputs are declared without a shape: the branches differ (the skipped one gives empties).
  const unshaped = (name: string, type: ElementType) => ({ name, type: { tensorType: { elemType: ONNX_DATA_TYPE[type] } } });
  const graphOf = (e: Emitter, values: string[], label: string) => {
    const output = values.map((v, i) => {
      const name = `${label}_${names[i]}`;
      e.g.op("Identity", [v], {}, { name: `${label}_out`, outputs: [name] });
      return unshaped(name, types[i]);
    });
    return { name: label, node: e.g.nodes, output };
  };
  const Type = onnx.AttributeProto.AttributeType;
  main.nodes.push({
    name: `if_${cond}`,
    opType: "If",
    input: [cond],
    output: names,
    attribute: [
      { name: "then_branch", type: Type.GRAPH, g: graphOf(then, thenValues, "then") },
      { name: "else_branch", type: Type.GRAPH, g: graphOf(otherwise, elseValues, "else") },
    ],
  });
  names.forEach((name, i) => main.outputs.push(unshaped(name, types[i])));
}

interface RmsSaved {
  xhat: string;
  inverseRms: string;
  weight: string;
}

/** weight * x / sqrt(mean(x^2) + eps) over the last axis. */
function rmsNorm(e: Emitter, x: string, weight: string, eps: number): { y: string; saved: RmsSaved } {
  const inverseRms = e.op("Reciprocal", [e.op("Sqrt", [e.add(e.meanLast(e.mul(x, x)), e.f32(eps))])]);
  const xhat = e.mul(x, inverseRms);
  return { y: e.mul(xhat, weight), saved: { xhat, inverseRms, weight } };
}

/** dL/dx of rmsNorm: r (g - xhat mean(g xhat)), g = dy * weight. */
function rmsNormBackward(e: Emitter, dy: string, { xhat, inverseRms, weight }: RmsSaved): string {
  const g = e.mul(dy, weight);
  return e.mul(inverseRms, e.op("Sub", [g, e.mul(xhat, e.meanLast(e.mul(g, xhat)))]));
}

interface LinearSaved {
  module: LinearModule;
  weight: string;
  /** Present when the module is adapted. */
  lora?: { input: string; down: string; a: string; b: string; keep: string | null };
}

interface BlockContext {
  g: GraphBuilder;
  config: ModelConfig;
  shapes: Map<string, number[]>;
  layer: number;
  lora: LoraGraphSettings;
  scale: number;
}

/** A frozen weight: a graph input named as in the weight map, fed by the caller on every run. */
function frozen(ctx: { g: GraphBuilder; shapes: Map<string, number[]> }, name: string): string {
  const shape = ctx.shapes.get(name);
  if (!shape) throw new Error(`the model has no tensor ${name}`);
  return ctx.g.input(name, "float32", shape);
}

/**
 * x W^T (+ b) + scale * (keep * x) A^T B^T: the frozen Gemm and, when the module is adapted,
 * the LoRA branch in the order transformer.ts computes it (scale after the down projection).
 */
function linear(ctx: BlockContext, e: Emitter, x: string, module: LinearModule): { y: string; saved: LinearSaved } {
  const name = linearWeightName(ctx.layer, module);
  const weight = frozen(ctx, name);
  const biased = ctx.config.attentionBias && (module === "q_proj" || module === "k_proj" || module === "v_proj");
  const inputs = biased ? [x, weight, frozen(ctx, name.replace(/weight$/, "bias"))] : [x, weight];
  let y = e.op("Gemm", inputs, { transB: int(1) });
  if (!ctx.lora.targetModules.includes(module)) return { y, saved: { module, weight } };
  const [out, inFeatures] = linearShape(ctx.config, module);
  const a = ctx.g.input(loraInput(module, "A"), "float32", [ctx.lora.rank, inFeatures]);
  const b = ctx.g.input(loraInput(module, "B"), "float32", [out, ctx.lora.rank]);
  const keep = ctx.lora.dropout ? ctx.g.input(dropoutInput(module), "float32", ["rows", inFeatures]) : null;
  const input = keep ? e.mul(x, keep) : x;
  const down = e.mul(e.op("Gemm", [input, a], { transB: int(1) }), e.f32(ctx.scale));
  y = e.add(y, e.op("Gemm", [down, b], { transB: int(1) }));
  return { y, saved: { module, weight, lora: { input, down, a, b, keep } } };
}

/**
 * dL/dx of linear, and the adapter's gradients into `grads`:
 *   dB = dy^T down,  d(down) = dy B,  dA = scale d(down)^T input,  dx = dy W + keep * scale d(down) A.
 */
function linearBackward(ctx: BlockContext, e: Emitter, dy: string, saved: LinearSaved, grads: Map<string, string>): string {
  const dx = e.op("MatMul", [dy, saved.weight]);
  if (!saved.lora) return dx;
  const { input, down, a, b, keep } = saved.lora;
  grads.set(loraGradient(saved.module, "B"), e.op("Gemm", [dy, down], { transA: int(1) }));
  const dDown = e.mul(e.op("MatMul", [dy, b]), e.f32(ctx.scale));
  grads.set(loraGradient(saved.module, "A"), e.op("Gemm", [dDown, input], { transA: int(1) }));
  const dInput = e.op("MatMul", [dDown, a]);
  return e.add(dx, keep ? e.mul(dInput, keep) : dInput);
}

/** Shapes built at run time from the attention bias [batch, 1, seq, seq]. */
interface Shapes {
  /** [batch, seq, heads, headDim] for `heads` query or KV heads. */
  split: (heads: number) => string;
  /** [batch, kvHeads, group * seq, last]: a group's query heads stacked along the sequence axis. */
  grouped: (last: string) => string;
  /** [batch, heads, seq, last]. */
  perHead: (last: string) => string;
  seq: string;
}

function shapes(e: Emitter, config: ModelConfig, bias: string): Shapes {
  const batch = e.op("Shape", [bias], { start: int(0), end: int(1) });
  const seq = e.op("Shape", [bias], { start: int(2), end: int(3) });
  const concat = (parts: string[]) => e.op("Concat", parts, { axis: int(0) });
  return {
    split: (heads) => concat([batch, seq, e.i64([heads, config.headDim])]),
    grouped: (last) => concat([batch, e.i64([config.numKvHeads, -1]), last]),
    perHead: (last) => concat([batch, e.i64([config.numHeads]), seq, last]),
    seq,
  };
}

/** q cos + rotate_half(q) sin; `sign` -1 rotates back by the negative angle (the transpose). */
function rope(e: Emitter, x: string, cos: string, sin: string, headDim: number, sign: 1 | -1): string {
  const [x1, x2] = e.g.opMulti("Split", [x, e.i64([headDim / 2, headDim / 2])], { axis: int(-1) }, { name: `${sign > 0 ? "rope" : "rope_back"}_Split`, outputs: [2] });
  const rotated = e.op("Concat", [e.op("Neg", [x2]), x1], { axis: int(-1) });
  const turn = e.mul(rotated, sin);
  return sign > 0 ? e.add(e.mul(x, cos), turn) : e.op("Sub", [e.mul(x, cos), turn]);
}

interface AttentionSaved {
  q: LinearSaved;
  k: LinearSaved;
  v: LinearSaved;
  o: LinearSaved;
  /** [batch, kv, group * seq, headDim] queries after RoPE. */
  queries: string;
  /** [batch, kv, seq, headDim] keys after RoPE, values. */
  keys: string;
  values: string;
  /** [batch, kv, group * seq, seq] attention weights. */
  probs: string;
}

const SWAP_LAST = [0, 1, 3, 2];
const HEADS_FIRST = [0, 2, 1, 3];

function attention(ctx: BlockContext, e: Emitter, x: string, s: Shapes, bias: string, cos: string, sin: string): { y: string; saved: AttentionSaved } {
  const { numHeads, numKvHeads, headDim } = ctx.config;
  const q = linear(ctx, e, x, "q_proj");
  const k = linear(ctx, e, x, "k_proj");
  const v = linear(ctx, e, x, "v_proj");
  const heads = (y: string, n: number) => e.transpose(e.reshape(y, s.split(n)), HEADS_FIRST);
  const d = e.i64([headDim]);
  const queries = e.reshape(rope(e, heads(q.y, numHeads), cos, sin, headDim, 1), s.grouped(d));
  const keys = rope(e, heads(k.y, numKvHeads), cos, sin, headDim, 1);
  const values = heads(v.y, numKvHeads);
  const scores = e.mul(e.op("MatMul", [queries, e.transpose(keys, SWAP_LAST)]), e.f32(1 / Math.sqrt(headDim)));
  const biased = e.add(e.reshape(scores, s.perHead(s.seq)), bias);
  const probs = e.reshape(e.op("Softmax", [biased], { axis: int(-1) }), s.grouped(s.seq));
  const mixed = e.reshape(e.op("MatMul", [probs, values]), s.perHead(d));
  const merged = e.reshape(e.transpose(mixed, HEADS_FIRST), e.i64([-1, numHeads * headDim]));
  const o = linear(ctx, e, merged, "o_proj");
  return { y: o.y, saved: { q: q.saved, k: k.saved, v: v.saved, o: o.saved, queries, keys, values, probs } };
}

/**
 * Softmax backward per row (p (dp - sum(dp p))), the scores' scale, then the products back to
 * queries and keys. A KV head's key and value gradients sum over its query group because the
 * group sits on the contracted axis; RoPE is undone by rotating with the negative angle.
 */
function attentionBackward(ctx: BlockContext, e: Emitter, dy: string, s: Shapes, cos: string, sin: string, saved: AttentionSaved, grads: Map<string, string>): string {
  const { numHeads, numKvHeads, headDim } = ctx.config;
  const d = e.i64([headDim]);
  const dMerged = linearBackward(ctx, e, dy, saved.o, grads);
  const dMixed = e.reshape(e.transpose(e.reshape(dMerged, s.split(numHeads)), HEADS_FIRST), s.grouped(d));
  const dValues = e.op("MatMul", [e.transpose(saved.probs, SWAP_LAST), dMixed]);
  const dProbs = e.op("MatMul", [dMixed, e.transpose(saved.values, SWAP_LAST)]);
  const dScores = e.mul(e.mul(saved.probs, e.op("Sub", [dProbs, e.sumLast(e.mul(dProbs, saved.probs))])), e.f32(1 / Math.sqrt(headDim)));
  const dQueries = e.reshape(e.op("MatMul", [dScores, saved.keys]), s.perHead(d));
  const dKeys = e.op("MatMul", [e.transpose(dScores, SWAP_LAST), saved.queries]);
  const rows = (t: string, n: number) => e.reshape(e.transpose(t, HEADS_FIRST), e.i64([-1, n * headDim]));
  const dq = rows(rope(e, dQueries, cos, sin, headDim, -1), numHeads);
  const dk = rows(rope(e, dKeys, cos, sin, headDim, -1), numKvHeads);
  const dv = rows(dValues, numKvHeads);
  return e.add(e.add(linearBackward(ctx, e, dq, saved.q, grads), linearBackward(ctx, e, dk, saved.k, grads)), linearBackward(ctx, e, dv, saved.v, grads));
}

interface MlpSaved {
  gate: LinearSaved;
  up: LinearSaved;
  down: LinearSaved;
  gateValue: string;
  sigmoid: string;
  activated: string;
  upValue: string;
}

/** down(silu(gate(x)) * up(x)). */
function mlp(ctx: BlockContext, e: Emitter, x: string): { y: string; saved: MlpSaved } {
  const gate = linear(ctx, e, x, "gate_proj");
  const up = linear(ctx, e, x, "up_proj");
  const sigmoid = e.op("Sigmoid", [gate.y]);
  const activated = e.mul(gate.y, sigmoid);
  const down = linear(ctx, e, e.mul(activated, up.y), "down_proj");
  return { y: down.y, saved: { gate: gate.saved, up: up.saved, down: down.saved, gateValue: gate.y, sigmoid, activated, upValue: up.y } };
}

/** silu'(g) = sigmoid(g) (1 + g (1 - sigmoid(g))). */
function mlpBackward(ctx: BlockContext, e: Emitter, dy: string, saved: MlpSaved, grads: Map<string, string>): string {
  const dProduct = linearBackward(ctx, e, dy, saved.down, grads);
  const dUp = e.mul(dProduct, saved.activated);
  const one = e.f32(1);
  const siluSlope = e.mul(saved.sigmoid, e.add(one, e.mul(saved.gateValue, e.op("Sub", [one, saved.sigmoid]))));
  const dGate = e.mul(e.mul(dProduct, saved.upValue), siluSlope);
  return e.add(linearBackward(ctx, e, dGate, saved.gate, grads), linearBackward(ctx, e, dUp, saved.up, grads));
}

/** The adapted modules of one layer, in the settings' order (the order gradients come out). */
export function adaptedModules(settings: Pick<LoraSettings, "targetModules">): LinearModule[] {
  return [...settings.targetModules];
}

/** One decoder layer: forward always, backward when `backward` is true. */
export function buildBlockGraph(config: ModelConfig, layer: number, lora: LoraGraphSettings): GraphBuilder {
  const g = new GraphBuilder();
  const ctx: BlockContext = { g, config, shapes: expectedWeights(config), layer, lora, scale: loraScale({ ...lora, dropout: 0 }) };
  const { hiddenSize: hidden, headDim, rmsNormEps: eps } = config;
  const x = g.input(BLOCK.x, "float32", ["rows", hidden]);
  const dy = g.input(BLOCK.dy, "float32", ["grad_rows", hidden]);
  const bias = g.input(BLOCK.bias, "float32", ["batch", 1, "seq", "seq"]);
  const cos = g.input(BLOCK.cos, "float32", ["batch", 1, "seq", headDim]);
  const sin = g.input(BLOCK.sin, "float32", ["batch", 1, "seq", headDim]);
  const backward = g.input(BLOCK.backward, "bool", []);

  const f = new Emitter(g, g, "fwd");
  const p = layerPrefix(layer);
  const s = shapes(f, config, bias);
  const norm1 = rmsNorm(f, x, frozen(ctx, `${p}.input_layernorm.weight`), eps);
  const attn = attention(ctx, f, norm1.y, s, bias, cos, sin);
  const h = f.add(x, attn.y);
  const norm2 = rmsNorm(f, h, frozen(ctx, `${p}.post_attention_layernorm.weight`), eps);
  const feed = mlp(ctx, f, norm2.y);
  g.output(f.add(h, feed.y), BLOCK.y, "float32", ["rows", hidden]);

  const b = branch(g, "bwd");
  const grads = new Map<string, string>();
  const dNorm2 = mlpBackward(ctx, b, dy, feed.saved, grads);
  const dh = b.add(dy, rmsNormBackward(b, dNorm2, norm2.saved));
  const dNorm1 = attentionBackward(ctx, b, dh, s, cos, sin, attn.saved, grads);
  const dx = b.add(dh, rmsNormBackward(b, dNorm1, norm1.saved));

  const skip = branch(g, "skip");
  const names: string[] = [BLOCK.dx];
  const thenValues = [dx];
  const elseValues = [skip.op("ConstantOfShape", [skip.i64([0, hidden])])];
  for (const module of adaptedModules(lora)) {
    for (const which of ["A", "B"] as const) {
      names.push(loraGradient(module, which));
      thenValues.push(grads.get(loraGradient(module, which))!);
      elseValues.push(skip.op("ConstantOfShape", [skip.i64([0, 0])]));
    }
  }
  ifNode(g, backward, names, names.map(() => "float32"), b, thenValues, skip, elseValues);
  return g;
}

/**
 * The embedding lookup, and with `with_loss` the loss at the selected rows of the last
 * block's output and its gradient. cross_entropy is -scale sum_i sum_j w_ij log q_i(id_ij);
 * the caller adds scale sum_i sum_j w_ij log w_ij (a constant) to make it the KL. Gradient
 * of the logits: scale (q_i sum_j w_ij - scatter-add of w_i at its ids), then back through
 * the head and the final norm, scattered into the selected rows of d_hidden.
 */
export function buildHeadGraph(config: ModelConfig): GraphBuilder {
  const g = new GraphBuilder();
  const { hiddenSize: hidden } = config;
  const shapes = expectedWeights(config);
  const tensor = (name: string) => frozen({ g, shapes }, name);
  const ids = g.input(HEAD.ids, "int64", ["tokens"]);
  const hiddenIn = g.input(HEAD.hidden, "float32", ["rows", hidden]);
  const rows = g.input(HEAD.lossRows, "int64", ["labelled"]);
  const labelIds = g.input(HEAD.labelIds, "int64", ["labelled", "width"]);
  const labelWeights = g.input(HEAD.labelWeights, "float32", ["labelled", "width"]);
  const scale = g.input(HEAD.lossScale, "float32", []);
  const withLoss = g.input(HEAD.withLoss, "bool", []);
  const embed = tensor("model.embed_tokens.weight");
  const head = lmHeadName(config) === "model.embed_tokens.weight" ? embed : tensor(lmHeadName(config));
  const finalNorm = tensor("model.norm.weight");

  const f = new Emitter(g, g, "fwd");
  g.output(f.op("Gather", [embed, ids], { axis: int(0) }), HEAD.embedded, "float32", ["tokens", hidden]);

  const b = branch(g, "loss");
  const selected = b.op("Gather", [hiddenIn, rows], { axis: int(0) });
  const norm = rmsNorm(b, selected, finalNorm, config.rmsNormEps);
  const logits = b.op("Gemm", [norm.y, head], { transB: int(1) });
  const logq = b.op("LogSoftmax", [logits], { axis: int(-1) });
  const picked = b.op("GatherElements", [logq, labelIds], { axis: int(1) });
  const cross = b.mul(b.op("Neg", [b.op("ReduceSum", [b.mul(picked, labelWeights)], { keepdims: int(0) })]), scale);
  const labelMass = b.op("ReduceSum", [labelWeights, b.i64([1])], { keepdims: int(1) });
  const scattered = b.op("ScatterElements", [b.op("ConstantOfShape", [b.op("Shape", [logits])]), labelIds, labelWeights], { axis: int(1), reduction: { string: "add" } });
  const dLogits = b.mul(b.op("Sub", [b.mul(b.op("Exp", [logq]), labelMass), scattered]), scale);
  const dSelected = rmsNormBackward(b, b.op("MatMul", [dLogits, head]), norm.saved);
  const dHidden = b.op("ScatterND", [b.op("ConstantOfShape", [b.op("Shape", [hiddenIn])]), b.op("Unsqueeze", [rows, b.i64([1])]), dSelected], { reduction: { string: "add" } });

  const skip = branch(g, "noloss");
  ifNode(g, withLoss, [HEAD.crossEntropy, HEAD.dHidden], ["float32", "float32"], b, [cross, dHidden], skip, [skip.op("Identity", [skip.f32(0)]), skip.op("ConstantOfShape", [skip.i64([0, hidden])])]);
  return g;
}
