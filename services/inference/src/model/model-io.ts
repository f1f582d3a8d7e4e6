// What the runtime needs to know about a causal-LM ONNX graph, read from the session's
// input and output metadata rather than assumed, so graphs this project did not export
// (Optimum, ONNX Runtime GenAI's builder, float16 ones) run through the same code.
import type * as ort from "onnxruntime-node";
import { ModelFormatError } from "#core/model/errors.ts";

/** Element types the runtime accepts for the KV cache and the logits. */
export type FloatType = "float32" | "float16";

export interface ModelIo {
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  kvType: FloatType;
  logitsType: FloatType;
  /** The logits' last dimension, or null when the graph leaves it symbolic. */
  vocabSize: number | null;
  /** A few exported graphs derive positions from the mask and take no position_ids. */
  hasPositionIds: boolean;
}

type Metadata = readonly ort.InferenceSession.ValueMetadata[];

const PAST = /^past_key_values\.(\d+)\.(key|value)$/;
const PRESENT = /^present\.(\d+)\.(key|value)$/;

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
    if (!["input_ids", "attention_mask", "position_ids"].includes(m.name) && !PAST.test(m.name)) {
      throw new ModelFormatError(source, `unsupported graph input ${m.name}; expected input_ids, attention_mask, position_ids and past_key_values.{i}.key|value`);
    }
  }

  const layers = new Set(inputs.flatMap((m) => PAST.exec(m.name)?.[1] ?? []).map(Number));
  const numLayers = layers.size;
  if (numLayers === 0) throw new ModelFormatError(source, "the graph has no past_key_values.{i}.key inputs; a KV-cache graph is required");
  const first = tensorMeta(inputs, "past_key_values.0.key", source);
  if (first.shape.length !== 4) throw new ModelFormatError(source, `past_key_values.0.key must be [batch, kv_heads, past, head_dim], got rank ${first.shape.length}`);
  const numKvHeads = fixedDim(first, 1, "number of KV heads", source);
  const headDim = fixedDim(first, 3, "head size", source);
  const kvType = floatType(first, source);
  for (let i = 0; i < numLayers; i++) {
    for (const kind of ["key", "value"]) {
      for (const [list, name] of [[inputs, `past_key_values.${i}.${kind}`], [outputs, `present.${i}.${kind}`]] as const) {
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

  const logits = tensorMeta(outputs, "logits", source);
  if (logits.shape.length !== 3) throw new ModelFormatError(source, `logits must be [batch, sequence, vocab], got rank ${logits.shape.length}`);
  const vocab = logits.shape[2];
  return {
    numLayers,
    numKvHeads,
    headDim,
    kvType,
    logitsType: floatType(logits, source),
    vocabSize: typeof vocab === "number" && vocab > 0 ? vocab : null,
    hasPositionIds,
  };
}
