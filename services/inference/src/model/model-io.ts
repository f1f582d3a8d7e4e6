// What the runtime needs to know about a causal-LM ONNX graph, read from the session's
// input and output metadata rather than assumed, so graphs this project did not export
// (Optimum, ONNX Runtime GenAI's builder, float16 ones) run through the same code.
import type * as ort from "onnxruntime-node";
import { ModelFormatError } from "#core/model/errors.ts";
import type { LinearModule } from "#core/model/weights.ts";
import { LINEAR_MODULES } from "#core/model/weights.ts";
import { LORA_MASK } from "./onnx-graph.ts";

/** Element types the runtime accepts for the KV cache and the logits. */
export type FloatType = "float32" | "float16";

export interface ModelIo {
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  kvType: FloatType;
  /** Element type of the logits, or of log_probs on a graph without logits. */
  logitsType: FloatType;
  /** The distribution's last dimension, or null when the graph leaves it symbolic. */
  vocabSize: number | null;
  /** A few exported graphs derive positions from the mask and take no position_ids. */
  hasPositionIds: boolean;
  /** The graph takes num_logits_to_keep and computes the head only at that many last positions. */
  keepsLogits: boolean;
  /** The graph emits log_probs (the log-softmax of its logits); graphs without it give logits. */
  hasLogProbs: boolean;
  /**
   * What the graph gives back of the cache: "present" (Optimum's present.{i}.key|value, past
   * and new positions together, right after the past) or "new" (this project's
   * new_key_values.{i}.key|value, the new positions only; the runtime holds the past).
   */
  kvOutputs: "present" | "new";
  /** The projections with a LoRA side branch (lora_a / lora_b inputs, one lora_mask for all); empty for other graphs. */
  lora: LoraSlot[];
}

/** One projection's LoRA inputs: A [inFeatures, rank], B [rank, outFeatures]; the graph's lora_mask [rows, 1, rank] picks each row's columns. */
export interface LoraSlot {
  layer: number;
  module: LinearModule;
  a: string;
  b: string;
  inFeatures: number;
  outFeatures: number;
}

type Metadata = readonly ort.InferenceSession.ValueMetadata[];

const PAST = /^past_key_values\.(\d+)\.(key|value)$/;
const PRESENT = /^(?:present|new_key_values)\.(\d+)\.(key|value)$/;
const LORA = /^lora_(a|b)\.(\d+)\.([a-z_]+)$/;

function tensorMeta(list: Metadata, name: string, source: string): ort.InferenceSession.TensorValueMetadata {
  const meta = list.find((m) => m.name === name);
  if (!meta) throw new ModelFormatError(source, `the graph has no ${name}`);
  if (!meta.isTensor) throw new ModelFormatError(source, `${name} is not a tensor`);
  return meta;
}

function floatType(meta: ort.InferenceSession.TensorValueMetadata, source: string): FloatType {
  if (meta.type === "float32" || meta.type === "float16") return meta.type;
  throw new ModelFormatError(source, `${meta.name} has element type ${meta.type}; only float32 and float16 are supported`);
}

function fixedDim(meta: ort.InferenceSession.TensorValueMetadata, axis: number, what: string, source: string): number {
  const dim = meta.shape[axis];
  if (typeof dim !== "number" || dim <= 0) {
    throw new ModelFormatError(source, `${meta.name} must have a fixed ${what} (axis ${axis}), got ${JSON.stringify(dim)}`);
  }
  return dim;
}

export function describeModelIo(session: ort.InferenceSession, source: string): ModelIo {
  const inputs = session.inputMetadata;
  const outputs = session.outputMetadata;
  for (const name of ["input_ids", "attention_mask"]) {
    if (tensorMeta(inputs, name, source).type !== "int64") throw new ModelFormatError(source, `${name} must be int64`);
  }
  const hasPositionIds = inputs.some((m) => m.name === "position_ids");
  for (const m of inputs) {
    if (!["input_ids", "attention_mask", "position_ids", "num_logits_to_keep", LORA_MASK].includes(m.name) && !PAST.test(m.name) && !LORA.test(m.name)) {
      throw new ModelFormatError(source, `unsupported graph input ${m.name}; expected input_ids, attention_mask, position_ids, past_key_values.{i}.key|value and optionally num_logits_to_keep, lora_a|lora_b.{i}.{module} with lora_mask`);
    }
  }
  const keepsLogits = inputs.some((m) => m.name === "num_logits_to_keep");
  if (keepsLogits) {
    const keep = tensorMeta(inputs, "num_logits_to_keep", source);
    if (keep.type !== "int64" || keep.shape.length !== 0) throw new ModelFormatError(source, "num_logits_to_keep must be an int64 scalar");
  }

  const layers = new Set(inputs.flatMap((m) => PAST.exec(m.name)?.[1] ?? []).map(Number));
  const numLayers = layers.size;
  if (numLayers === 0) throw new ModelFormatError(source, "the graph has no past_key_values.{i}.key inputs; a KV-cache graph is required");
  const first = tensorMeta(inputs, "past_key_values.0.key", source);
  if (first.shape.length !== 4) throw new ModelFormatError(source, `past_key_values.0.key must be [batch, kv_heads, past, head_dim], got rank ${first.shape.length}`);
  const numKvHeads = fixedDim(first, 1, "number of KV heads", source);
  const headDim = fixedDim(first, 3, "head size", source);
  const kvType = floatType(first, source);
  const kvOutputs = outputs.some((m) => m.name === "new_key_values.0.key") ? "new" : "present";
  const outputPrefix = kvOutputs === "new" ? "new_key_values" : "present";
  for (let i = 0; i < numLayers; i++) {
    for (const kind of ["key", "value"]) {
      for (const [list, name] of [[inputs, `past_key_values.${i}.${kind}`], [outputs, `${outputPrefix}.${i}.${kind}`]] as const) {
        const meta = tensorMeta(list, name, source);
        if (floatType(meta, source) !== kvType) throw new ModelFormatError(source, `${name} is ${meta.type} but past_key_values.0.key is ${kvType}`);
        if (meta.shape.length !== 4 || meta.shape[1] !== numKvHeads || meta.shape[3] !== headDim) {
          throw new ModelFormatError(source, `${name} has shape [${meta.shape.join(", ")}], expected [batch, ${numKvHeads}, length, ${headDim}]`);
        }
      }
    }
  }
  const extraPresent = outputs.find((m) => PRESENT.test(m.name) && Number(PRESENT.exec(m.name)![1]) >= numLayers);
  if (extraPresent) throw new ModelFormatError(source, `${extraPresent.name} has no matching past_key_values input`);

  // The served graph gives log_probs only, Optimum files logits only, our export both.
  const hasLogProbs = outputs.some((m) => m.name === "log_probs");
  const hasLogits = outputs.some((m) => m.name === "logits");
  if (!hasLogProbs && !hasLogits) throw new ModelFormatError(source, "the graph has neither log_probs nor logits");
  const logProbs = hasLogProbs ? tensorMeta(outputs, "log_probs", source) : null;
  if (logProbs && (logProbs.type !== "float32" || logProbs.shape.length !== 3)) throw new ModelFormatError(source, "log_probs must be float32 [batch, sequence, vocab]");
  const logits = hasLogits ? tensorMeta(outputs, "logits", source) : null;
  if (logits && logits.shape.length !== 3) throw new ModelFormatError(source, `logits must be [batch, sequence, vocab], got rank ${logits.shape.length}`);
  const vocab = (logProbs ?? logits!).shape[2];
  return {
    numLayers,
    numKvHeads,
    headDim,
    kvType,
    logitsType: floatType(logits ?? logProbs!, source),
    vocabSize: typeof vocab === "number" && vocab > 0 ? vocab : null,
    hasPositionIds,
    keepsLogits,
    hasLogProbs,
    kvOutputs,
    lora: loraSlots(inputs, source),
  };
}

function loraSlots(inputs: Metadata, source: string): LoraSlot[] {
  const slots: LoraSlot[] = [];
  for (const m of inputs) {
    const match = LORA.exec(m.name);
    if (!match || match[1] !== "a") continue;
    const [, , layerText, moduleName] = match;
    if (!(LINEAR_MODULES as readonly string[]).includes(moduleName)) throw new ModelFormatError(source, `${m.name} names no linear module (${LINEAR_MODULES.join(", ")})`);
    const a = tensorMeta(inputs, m.name, source);
    const bName = `lora_b.${layerText}.${moduleName}`;
    const b = tensorMeta(inputs, bName, source);
    if (a.type !== "float32" || b.type !== "float32" || a.shape.length !== 2 || b.shape.length !== 2) {
      throw new ModelFormatError(source, `${m.name} and ${bName} must be float32 [in, rank] and [rank, out]`);
    }
    slots.push({ layer: Number(layerText), module: moduleName as LinearModule, a: m.name, b: bName, inFeatures: fixedDim(a, 0, "input size", source), outFeatures: fixedDim(b, 1, "output size", source) });
  }
  const unpaired = inputs.find((m) => LORA.exec(m.name)?.[1] === "b" && !slots.some((s) => s.b === m.name));
  if (unpaired) throw new ModelFormatError(source, `${unpaired.name} has no matching lora_a input`);
  const mask = inputs.find((m) => m.name === LORA_MASK);
  if (slots.length > 0 && !mask) throw new ModelFormatError(source, `the graph has LoRA inputs but no ${LORA_MASK}`);
  if (mask) {
    const meta = tensorMeta(inputs, LORA_MASK, source);
    if (slots.length === 0) throw new ModelFormatError(source, `${LORA_MASK} without any lora_a / lora_b inputs`);
    if (meta.type !== "float32" || meta.shape.length !== 3) throw new ModelFormatError(source, `${LORA_MASK} must be float32 [rows, 1, rank]`);
  }
  return slots;
}
