// The frozen expert as ONNX Runtime sessions that give the LoRA loss and gradients of one
// micro-batch: the gradient graphs of gradient-graphs.ts, one session per layer plus one
// for the embedding and the head, driven layer by layer from here. This is how a
// 0.5B-parameter expert trains on a CPU-only machine, where TensorFlow.js has only wasm
// (about 3 GFLOP/s, and a 4 GiB heap that cannot hold the weights) while ONNX Runtime's CPU
// kernels run the same products tens of times faster (README, "Training engine").
//
// Memory plan (float32; numbers for the Qwen2.5-0.5B shape: 24 layers, hidden 896, 14/2
// heads of 64, MLP 4864, vocabulary 151,936 tied):
//   base weights      held once: the caller's weight arrays (1.98 GB), which the sessions
//                     read in place as graph inputs; ONNX Runtime makes no copy
//   layer inputs      kept from the forward for the backward: layers * hidden * 4 bytes
//                     per token (86 KB), the only activations that outlive one layer
//   one layer's work  recomputed in its backward (the layer's forward runs twice), so
//                     only one layer's intermediates and their gradients exist at a time:
//                     about 2 * (6 hidden + 2 qkv + 4 mlp + 2 heads * seq) floats per
//                     token (260 KB at seq 192)
//   head              logits only at the labelled positions: vocab * 4 bytes (608 KB)
//                     per labelled position, a few times over for softmax and gradient
// activationBytesPerToken() adds up the two middle rows (346 KB per token at seq 192).
// `tokenBudget` caps the tokens (rows * padded length) of one pass; a larger micro-batch
// runs in groups of rows, so the trainer holds the base plus budget * that at most.
import * as ort from "onnxruntime-node";
import type { ModelConfig } from "#core/model/config.ts";
import type { LoraSettings } from "#core/model/lora.ts";
import { linearWeightName } from "#core/model/weights.ts";
import type { WeightMap } from "#core/model/weights.ts";
import { encodeInline } from "#core/formats/onnx-file.ts";
import type { GraphBuilder } from "#core/formats/onnx-builder.ts";
import { BLOCK, HEAD, adaptedModules, buildBlockGraph, buildHeadGraph, dropoutInput, loraGradient, loraInput } from "./gradient-graphs.ts";
import { attentionBias, ModelInputError, prepareBatch } from "./inputs.ts";
import { ropeTableData } from "./rope.ts";
import type { SelectedPosition } from "./transformer.ts";
import { checkWeights } from "./transformer.ts";

/** A label over the vocabulary: ids and their probabilities (the soft target v_C). */
export interface LabelDistribution {
  ids: readonly number[];
  weights: readonly number[];
}

/** What the engine reads of the adapter: current values and dropout factors. */
export interface AdapterSource {
  pairValues(name: string): { a: Float32Array; b: Float32Array };
  /** Null when dropout is off. */
  dropoutFactors(name: string, pass: number, size: number): Float32Array | null;
}

export interface MicroBatchInput {
  /** Token rows, right-padded to one length. */
  rows: number[][];
  /** [row, position] whose logits predict each label. */
  positions: readonly SelectedPosition[];
  labels: readonly LabelDistribution[];
  /** The loss is sum of KL / normaliser. */
  normaliser: number;
  /** LoRA dropout pass number, or null for no dropout. */
  dropoutPass: number | null;
}

export interface LossAndGradients {
  loss: number;
  /** Keyed by the adapted weight's name: dL/dA [rank, in] and dL/dB [out, rank]. */
  grads: Map<string, { a: Float32Array; b: Float32Array }>;
}

export interface OnnxExpertOptions {
  /** Most tokens (rows * padded length) one pass may hold; a larger micro-batch runs in groups of rows. */
  tokenBudget?: number;
  /** ONNX Runtime intra-op threads (default: its own choice, the core count). */
  threads?: number;
}

/** Default token budget: 4096 tokens is about 0.9 GB of activations at the 0.5B shape. */
export const DEFAULT_TOKEN_BUDGET = 4096;

/** Bytes of activations per token of a micro-batch whose rows are `seq` long (the plan above). */
export function activationBytesPerToken(config: ModelConfig, seq: number): number {
  const { hiddenSize: h, intermediateSize: m, numHeads, numKvHeads, headDim, numLayers } = config;
  const projections = (numHeads + 2 * numKvHeads) * headDim;
  // Forward values kept for the layer's backward, and their gradients (about as many).
  const layer = 2 * (6 * h + 2 * projections + 4 * m + 2 * numHeads * seq);
  return 4 * (numLayers * h + layer);
}

const float = (data: Float32Array, dims: number[]) => new ort.Tensor("float32", data, dims);
const int64 = (values: ArrayLike<number>, dims: number[]) => new ort.Tensor("int64", BigInt64Array.from(Array.from(values, (v) => BigInt(v))), dims);
const flag = (value: boolean) => new ort.Tensor("bool", [value], []);

/** A session with the weight tensors it reads: the caller's arrays, wrapped, never copied. */
interface WeightedSession {
  session: ort.InferenceSession;
  weights: Record<string, ort.Tensor>;
}

async function openSession(graph: GraphBuilder, name: string, weights: WeightMap, options: OnnxExpertOptions): Promise<WeightedSession> {
  const fed: Record<string, ort.Tensor> = {};
  for (const input of graph.inputs) {
    const t = weights.get(input.name!);
    if (t) fed[input.name!] = float(t.data, t.shape);
  }
  const bytes = encodeInline(graph, { graphName: name });
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: ["cpu"],
    graphOptimizationLevel: "all",
    ...(options.threads === undefined ? {} : { intraOpNumThreads: options.threads, interOpNumThreads: 1 }),
    // Each session would keep an arena as large as its own peak, and there are layers + 1
    // sessions: with the arena off, a layer's activations go back to the system after its run.
    enableCpuMemArena: false,
  });
  return { session, weights: fed };
}

export class OnnxLoraExpert {
  private constructor(
    readonly config: ModelConfig,
    readonly lora: Pick<LoraSettings, "rank" | "alpha" | "targetModules" | "dropout">,
    private readonly head: WeightedSession,
    private readonly blocks: WeightedSession[],
    readonly tokenBudget: number,
  ) {}

  /**
   * Opens a session per layer and one for the head. `weights` is read in place on every
   * run, not copied: the caller keeps it, unchanged, for as long as this expert is used.
   */
  static async create(config: ModelConfig, weights: WeightMap, lora: Pick<LoraSettings, "rank" | "alpha" | "targetModules" | "dropout">, options: OnnxExpertOptions = {}): Promise<OnnxLoraExpert> {
    const graphSettings = { rank: lora.rank, alpha: lora.alpha, targetModules: [...lora.targetModules], dropout: lora.dropout > 0 };
    checkWeights(config, weights, "expert");
    const opened: WeightedSession[] = [];
    try {
      const head = await openSession(buildHeadGraph(config), "lora-head", weights, options);
      opened.push(head);
      const blocks: WeightedSession[] = [];
      for (let layer = 0; layer < config.numLayers; layer++) {
        blocks.push(await openSession(buildBlockGraph(config, layer, graphSettings), `lora-block-${layer}`, weights, options));
        opened.push(blocks[layer]);
      }
      return new OnnxLoraExpert(config, { ...lora, targetModules: [...lora.targetModules] }, head, blocks, options.tokenBudget ?? DEFAULT_TOKEN_BUDGET);
    } catch (err) {
      await Promise.all(opened.map((s) => s.session.release()));
      throw err;
    }
  }

  /**
   * The loss sum_i KL(label_i || softmax(logits_i)) / normaliser and its gradient in every
   * LoRA A and B. Rows are run in groups of at most tokenBudget tokens (padded width times
   * rows) whose losses and gradients add up: the loss is a sum over labels, and a row only
   * ever attends to itself. Dropout factors are drawn for the whole micro-batch and sliced,
   * so the grouping changes nothing but memory.
   */
  async lossAndGradients(input: MicroBatchInput, adapter: AdapterSource): Promise<LossAndGradients> {
    const { config } = this;
    const batch = prepareBatch(input.rows, undefined, config.vocabSize);
    if (input.labels.length !== input.positions.length || input.labels.length === 0) {
      throw new ModelInputError("labels", `${input.labels.length} labels for ${input.positions.length} positions; need one per position, at least one`);
    }
    if (!(input.normaliser > 0)) throw new ModelInputError("normaliser", `must be > 0, got ${input.normaliser}`);
    const rowsPerGroup = Math.floor(this.tokenBudget / batch.seq);
    if (rowsPerGroup < 1) {
      throw new ModelInputError("rows", `a row of ${batch.seq} tokens exceeds the token budget of ${this.tokenBudget} per pass; raise the budget or shorten the trajectories`);
    }
    const rowIndex = input.positions.map(([b, t], i) => {
      if (!Number.isInteger(b) || !Number.isInteger(t) || b < 0 || b >= batch.batch || t < 0 || t >= batch.seq) {
        throw new ModelInputError("positions", `[${i}] = [${b}, ${t}] is outside the batch [${batch.batch}, ${batch.seq}]`);
      }
      return b;
    });
    const total: LossAndGradients = { loss: 0, grads: new Map() };
    for (let first = 0; first < batch.batch; first += rowsPerGroup) {
      const last = Math.min(batch.batch, first + rowsPerGroup);
      const picked = input.positions.flatMap((p, i) => (rowIndex[i] >= first && rowIndex[i] < last ? [i] : []));
      if (picked.length === 0) continue;
      const part = await this.group(input, adapter, { first, last, seq: batch.seq, totalRows: batch.batch }, picked);
      total.loss += part.loss;
      for (const [name, g] of part.grads) {
        const sum = total.grads.get(name);
        if (!sum) total.grads.set(name, g);
        else {
          for (let i = 0; i < g.a.length; i++) sum.a[i] += g.a[i];
          for (let i = 0; i < g.b.length; i++) sum.b[i] += g.b[i];
        }
      }
    }
    return total;
  }

  /**
   * log q(id) at each query's [row, position] under `adapter` (no dropout), forward only: a
   * served model's log-probabilities as the trainer's engine computes them (serving parity).
   * Each is the head's cross-entropy with a one-hot label of weight 1 and scale 1, which is
   * exactly -log q(id); one head run per query, since the head sums its labels.
   */
  async logProbsAt(rows: number[][], queries: readonly { position: SelectedPosition; id: number }[], adapter: AdapterSource): Promise<Float32Array> {
    const { config } = this;
    const batch = prepareBatch(rows, undefined, config.vocabSize);
    if (batch.batch * batch.seq > this.tokenBudget) {
      throw new ModelInputError("rows", `${batch.batch} rows of ${batch.seq} tokens exceed the token budget of ${this.tokenBudget} per pass`);
    }
    queries.forEach(({ position: [b, t], id }, i) => {
      if (!Number.isInteger(b) || !Number.isInteger(t) || b < 0 || b >= batch.batch || t < 0 || t >= batch.seq) {
        throw new ModelInputError(`queries[${i}].position`, `[${b}, ${t}] is outside the batch [${batch.batch}, ${batch.seq}]`);
      }
      if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize) throw new ModelInputError(`queries[${i}].id`, `${id} is not a token id in [0, ${config.vocabSize})`);
    });
    const pass = this.passInputs(rows, { first: 0, last: rows.length, seq: batch.seq, totalRows: batch.batch }, null, adapter);
    const layerInputs = await this.forward(pass);
    const out = new Float32Array(queries.length);
    for (let i = 0; i < queries.length; i++) {
      const { position: [b, t], id } = queries[i];
      const head = await this.head.session.run({
        ...this.head.weights,
        [HEAD.ids]: int64([], [0]),
        [HEAD.hidden]: float(layerInputs[config.numLayers], [pass.tokens, config.hiddenSize]),
        [HEAD.lossRows]: int64([b * batch.seq + t], [1]),
        [HEAD.labelIds]: int64([id], [1, 1]),
        [HEAD.labelWeights]: float(Float32Array.of(1), [1, 1]),
        [HEAD.lossScale]: float(Float32Array.of(1), []),
        [HEAD.withLoss]: flag(true),
      });
      out[i] = -(head[HEAD.crossEntropy].data as Float32Array)[0];
    }
    return out;
  }

  /** The inputs every block of one pass over rows [first, last) reads: masks, rotary tables, adapter values. */
  private passInputs(allRows: number[][], span: { first: number; last: number; seq: number; totalRows: number }, dropoutPass: number | null, adapter: AdapterSource) {
    const { config } = this;
    const { first, last, seq } = span;
    const batch = prepareBatch(allRows.slice(first, last), undefined, config.vocabSize);
    const tokens = batch.batch * seq;
    const { headDim } = config;
    const rope = ropeTableData(batch.positions, tokens, headDim, config.ropeTheta);
    const shared: Record<string, ort.Tensor> = {
      [BLOCK.bias]: float(attentionBias(batch), [batch.batch, 1, seq, seq]),
      [BLOCK.cos]: float(rope.cos, [batch.batch, 1, seq, headDim]),
      [BLOCK.sin]: float(rope.sin, [batch.batch, 1, seq, headDim]),
    };
    const modules = adaptedModules(this.lora);

    const layerFeeds = (layer: number): Record<string, ort.Tensor> => {
      const feeds: Record<string, ort.Tensor> = {};
      for (const module of modules) {
        const name = linearWeightName(layer, module);
        const { a, b } = adapter.pairValues(name);
        const [out, inFeatures] = [b.length / this.lora.rank, a.length / this.lora.rank];
        feeds[loraInput(module, "A")] = float(a, [this.lora.rank, inFeatures]);
        feeds[loraInput(module, "B")] = float(b, [out, this.lora.rank]);
        if (this.lora.dropout > 0) {
          // Without a dropout pass (evaluation), factors of 1 leave the input as it is.
          const keep = dropoutPass === null
            ? new Float32Array(tokens * inFeatures).fill(1)
            : adapter.dropoutFactors(name, dropoutPass, span.totalRows * seq * inFeatures)!.subarray(first * seq * inFeatures, last * seq * inFeatures);
          feeds[dropoutInput(module)] = float(keep, [tokens, inFeatures]);
        }
      }
      return feeds;
    };
    return { batch, tokens, shared, modules, layerFeeds };
  }

  /** Every layer's input and the last layer's output (the only activations that outlive a layer). */
  private async forward({ batch, tokens, shared, layerFeeds }: ReturnType<OnnxLoraExpert["passInputs"]>): Promise<Float32Array[]> {
    const { config } = this;
    const embedded = await this.head.session.run({ ...this.head.weights, ...this.emptyLoss(), [HEAD.ids]: int64(batch.ids, [tokens]), [HEAD.withLoss]: flag(false) });
    const layerInputs: Float32Array[] = [embedded[HEAD.embedded].data as Float32Array];
    for (let layer = 0; layer < config.numLayers; layer++) {
      const out = await this.blocks[layer].session.run({
        ...this.blocks[layer].weights,
        ...shared,
        ...layerFeeds(layer),
        [BLOCK.x]: float(layerInputs[layer], [tokens, config.hiddenSize]),
        [BLOCK.dy]: float(new Float32Array(0), [0, config.hiddenSize]),
        [BLOCK.backward]: flag(false),
      });
      layerInputs.push(out[BLOCK.y].data as Float32Array);
    }
    return layerInputs;
  }

  /** Forward, loss and backward of rows [first, last) and the labels `picked` among them. */
  private async group(input: MicroBatchInput, adapter: AdapterSource, span: { first: number; last: number; seq: number; totalRows: number }, picked: number[]): Promise<LossAndGradients> {
    const { config } = this;
    const { first, seq } = span;
    const hidden = config.hiddenSize;
    const pass = this.passInputs(input.rows, span, input.dropoutPass, adapter);
    const { tokens, shared, modules, layerFeeds } = pass;
    const layerInputs = await this.forward(pass);

    // The loss at the labelled positions, and its gradient in the last layer's output.
    const labels = picked.map((i) => input.labels[i]);
    const width = Math.max(...labels.map((l) => l.ids.length));
    const labelIds = new Array<number>(labels.length * width);
    const labelWeights = new Float32Array(labels.length * width);
    let negEntropy = 0;
    labels.forEach(({ ids, weights }, k) => {
      const i = picked[k];
      if (ids.length === 0 || ids.length !== weights.length) throw new ModelInputError(`labels[${i}]`, `has ${ids.length} ids and ${weights.length} weights; need as many of each, at least one`);
      for (let j = 0; j < width; j++) {
        // A padding slot repeats a real id with weight 0: no value, no gradient.
        const id = j < ids.length ? ids[j] : ids[0];
        if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize) throw new ModelInputError(`labels[${i}].ids[${j}]`, `${id} is not a token id in [0, ${config.vocabSize})`);
        labelIds[k * width + j] = id;
        if (j < ids.length) {
          labelWeights[k * width + j] = weights[j];
          if (weights[j] > 0) negEntropy += weights[j] * Math.log(weights[j]);
        }
      }
    });
    const rows = picked.map((i) => (input.positions[i][0] - first) * seq + input.positions[i][1]);
    const scale = 1 / input.normaliser;
    const head = await this.head.session.run({
      ...this.head.weights,
      [HEAD.ids]: int64([], [0]),
      [HEAD.hidden]: float(layerInputs[config.numLayers], [tokens, hidden]),
      [HEAD.lossRows]: int64(rows, [rows.length]),
      [HEAD.labelIds]: int64(labelIds, [labels.length, width]),
      [HEAD.labelWeights]: float(labelWeights, [labels.length, width]),
      [HEAD.lossScale]: float(Float32Array.of(scale), []),
      [HEAD.withLoss]: flag(true),
    });
    const loss = (head[HEAD.crossEntropy].data as Float32Array)[0] + negEntropy * scale;

    // Backward, top layer first: each layer recomputes its forward from its kept input.
    const grads = new Map<string, { a: Float32Array; b: Float32Array }>();
    let dy = head[HEAD.dHidden].data as Float32Array;
    for (let layer = config.numLayers - 1; layer >= 0; layer--) {
      const out = await this.blocks[layer].session.run({
        ...this.blocks[layer].weights,
        ...shared,
        ...layerFeeds(layer),
        [BLOCK.x]: float(layerInputs[layer], [tokens, hidden]),
        [BLOCK.dy]: float(dy, [tokens, hidden]),
        [BLOCK.backward]: flag(true),
      });
      for (const module of modules) {
        grads.set(linearWeightName(layer, module), {
          a: out[loraGradient(module, "A")].data as Float32Array,
          b: out[loraGradient(module, "B")].data as Float32Array,
        });
      }
      dy = out[BLOCK.dx].data as Float32Array;
      layerInputs.length = layer; // this layer's input and output are no longer needed
    }
    return { loss, grads };
  }

  async dispose(): Promise<void> {
    await Promise.all([this.head, ...this.blocks].map((s) => s.session.release()));
  }

  private emptyLoss(): Record<string, ort.Tensor> {
    return {
      [HEAD.hidden]: float(new Float32Array(0), [0, this.config.hiddenSize]),
      [HEAD.lossRows]: int64([], [0]),
      [HEAD.labelIds]: int64([], [0, 1]),
      [HEAD.labelWeights]: float(new Float32Array(0), [0, 1]),
      [HEAD.lossScale]: float(Float32Array.of(1), []),
    };
  }
}

