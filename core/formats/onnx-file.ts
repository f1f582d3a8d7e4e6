// Serialises a built graph as an ONNX ModelProto: in memory with the weights inline (or left
// in the files they came from, for ONNX Runtime to read), or to disk with the weights in an
// external data file beside the .onnx when protobuf's 2 GiB message limit (or plain memory)
// makes inline bytes a bad idea.
import { closeSync, mkdirSync, openSync, writeFileSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import onnxProto from "onnx-proto";
import type { GraphBuilder, Initializer } from "./onnx-builder.ts";
import { ONNX_DATA_TYPE } from "./onnx-builder.ts";

/** The default-domain opset of every graph the project writes (Attention, RotaryEmbedding, RMSNormalization). */
export const OPSET_VERSION = 23;

const { onnx } = onnxProto;
type ITensorProto = onnxProto.onnx.ITensorProto;

/** IR version 11 is the one that goes with opset 23 (ONNX 1.18). */
export const IR_VERSION = 11;

/** A protobuf message (the whole .onnx file when weights are inline) must stay below 2 GiB. */
const PROTOBUF_LIMIT = 2 ** 31 - 2 ** 24;

/** Above this many weight bytes the exporter writes an external data file. */
export const EXTERNAL_DATA_THRESHOLD = 1.5e9;

/** Tensors smaller than this stay inline: shape constants must be readable during shape inference. */
const INLINE_TENSOR_BYTES = 1024;

/** External data offsets are aligned so a runtime may memory-map the tensors. */
const EXTERNAL_ALIGNMENT = 4096;

export interface ModelInfo {
  graphName: string;
  docString?: string;
  metadata?: Record<string, string>;
}

export const weightBytes = (graph: GraphBuilder) => graph.initializers.reduce((n, t) => n + t.byteLength, 0);

function modelProto(graph: GraphBuilder, info: ModelInfo, initializers: ITensorProto[]) {
  return onnx.ModelProto.create({
    irVersion: IR_VERSION,
    producerName: "lightreasoner",
    opsetImport: [{ domain: "", version: OPSET_VERSION }],
    docString: info.docString ?? "",
    metadataProps: Object.entries(info.metadata ?? {}).map(([key, value]) => ({ key, value })),
    graph: {
      name: info.graphName,
      node: graph.nodes,
      input: graph.inputs,
      output: graph.outputs,
      initializer: initializers,
    },
  });
}

function tensorHeader(t: Initializer): ITensorProto {
  return { name: t.name, dataType: ONNX_DATA_TYPE[t.type], dims: t.dims };
}

function externalHeader(t: Initializer, location: string, offset: number, length: number): ITensorProto {
  return {
    ...tensorHeader(t),
    dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
    externalData: [
      { key: "location", value: location },
      { key: "offset", value: String(offset) },
      { key: "length", value: String(length) },
    ],
  };
}

/** The one folder the graph's file-backed weights lie in (ONNX Runtime resolves them there), or null. */
export function externalDataDir(graph: GraphBuilder): string | null {
  const dirs = new Set(graph.initializers.flatMap((t) => (t.external ? [t.external.dir] : [])));
  if (dirs.size > 1) throw new Error(`the graph's weights lie in ${dirs.size} folders (${[...dirs].join(", ")}); one is supported`);
  return dirs.size === 1 ? [...dirs][0] : null;
}

/**
 * The model as bytes ONNX Runtime can open: in-memory weights inline, file-backed ones
 * (FileSlice) referred to as external data, to be resolved in externalDataDir(graph).
 */
export function encodeInline(graph: GraphBuilder, info: ModelInfo): Uint8Array {
  const total = graph.initializers.reduce((n, t) => n + (t.external ? 0 : t.byteLength), 0);
  if (total > PROTOBUF_LIMIT) {
    throw new RangeError(`${total} weight bytes do not fit one protobuf message (2 GiB); write the model to a file with external data`);
  }
  const initializers = graph.initializers.map((t) =>
    t.external ? externalHeader(t, t.external.location, t.external.offset, t.external.byteLength) : { ...tensorHeader(t), rawData: t.bytes() },
  );
  return onnx.ModelProto.encode(modelProto(graph, info, initializers)).finish();
}

export interface WrittenModel {
  onnxPath: string;
  /** Present when the weights went to an external data file. */
  externalDataPath?: string;
  weightBytes: number;
}

/**
 * Writes `<outPath>` and, when the weights exceed `externalThreshold` bytes, `<outPath>.data`
 * beside it (every tensor of 1 KiB or more). Each tensor's bytes are produced and written
 * one at a time.
 */
export function writeModelFile(graph: GraphBuilder, info: ModelInfo, outPath: string, externalThreshold = EXTERNAL_DATA_THRESHOLD): WrittenModel {
  mkdirSync(dirname(outPath), { recursive: true });
  const total = weightBytes(graph);
  if (total <= externalThreshold) {
    // Every byte inline, file-backed weights included: the file must stand alone.
    const inline = graph.initializers.map((t) => ({ ...tensorHeader(t), rawData: t.bytes() }));
    writeFileSync(outPath, onnx.ModelProto.encode(modelProto(graph, info, inline)).finish());
    return { onnxPath: outPath, weightBytes: total };
  }
  const dataPath = `${outPath}.data`;
  const location = basename(dataPath);
  const fd = openSync(dataPath, "w");
  const headers: ITensorProto[] = [];
  let offset = 0;
  try {
    for (const t of graph.initializers) {
      if (t.byteLength < INLINE_TENSOR_BYTES) {
        headers.push({ ...tensorHeader(t), rawData: t.bytes() });
        continue;
      }
      offset = Math.ceil(offset / EXTERNAL_ALIGNMENT) * EXTERNAL_ALIGNMENT;
      const bytes = t.bytes();
      for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done, offset + done);
      headers.push(externalHeader(t, location, offset, bytes.length));
      offset += bytes.length;
    }
  } finally {
    closeSync(fd);
  }
  writeFileSync(outPath, onnx.ModelProto.encode(modelProto(graph, info, headers)).finish());
  return { onnxPath: outPath, externalDataPath: join(dirname(outPath), location), weightBytes: total };
}
