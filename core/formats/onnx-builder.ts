// A small typed layer over the onnx-proto messages, so the model graph reads as a list of
// operators rather than protobuf bookkeeping. Weights are kept as lazy initializers: the
// file writer decides whether their bytes go inline or to an external data file, and a
// multi-gigabyte model never has to sit in memory twice. A weight may also be a slice of a
// file (a safetensors tensor), which ONNX Runtime reads itself as external data, so a served
// model's weights never pass through JavaScript at all. Both services write graphs with it
// (the inference service its causal LM, the trainer its gradient graphs), so it lives here.
import { closeSync, openSync, readSync } from "node:fs";
import { join } from "node:path";
import onnxProto from "onnx-proto";

const { onnx } = onnxProto;
type IAttributeProto = onnxProto.onnx.IAttributeProto;
type INodeProto = onnxProto.onnx.INodeProto;
type IValueInfoProto = onnxProto.onnx.IValueInfoProto;

/** The element types this project puts in graphs, by their ONNX Runtime names. */
export type ElementType = "float32" | "float16" | "float64" | "int64" | "bool";

export const ONNX_DATA_TYPE: Record<ElementType, number> = {
  float32: onnx.TensorProto.DataType.FLOAT,
  float16: onnx.TensorProto.DataType.FLOAT16,
  float64: onnx.TensorProto.DataType.DOUBLE,
  int64: onnx.TensorProto.DataType.INT64,
  bool: onnx.TensorProto.DataType.BOOL,
};

/** A dimension is a fixed size or the name of a dynamic axis. */
export type Dim = number | string;

/** An attribute value with its ONNX type made explicit (an integer-valued float is still a float). */
export type Attribute = { int: number } | { float: number } | { ints: number[] } | { string: string };

export const int = (value: number): Attribute => ({ int: value });
export const float = (value: number): Attribute => ({ float: value });
export const ints = (values: number[]): Attribute => ({ ints: values });

/** float32 bytes lying in a file: `location` relative to `dir`, the folder the model's external data is read from. */
export interface FileSlice {
  dir: string;
  location: string;
  offset: number;
  byteLength: number;
}

export const isFileSlice = (data: unknown): data is FileSlice => typeof data === "object" && data !== null && "location" in data;

/** A constant tensor of the graph whose bytes are produced only when the file is written. */
export interface Initializer {
  name: string;
  type: ElementType;
  dims: number[];
  byteLength: number;
  bytes(): Uint8Array;
  /** Set when the bytes stay in a file that the runtime reads (the graph then refers to it). */
  external?: FileSlice;
}

function readSlice({ dir, location, offset, byteLength }: FileSlice): Uint8Array {
  const bytes = new Uint8Array(byteLength);
  const fd = openSync(join(dir, location), "r");
  try {
    for (let done = 0; done < byteLength; ) {
      const n = readSync(fd, bytes, done, byteLength - done, offset + done);
      if (n === 0) throw new Error(`${location}: file ends before byte ${offset + byteLength}`);
      done += n;
    }
  } finally {
    closeSync(fd);
  }
  return bytes;
}

function attributeProto(name: string, value: Attribute): IAttributeProto {
  const Type = onnx.AttributeProto.AttributeType;
  if ("int" in value) return { name, type: Type.INT, i: value.int };
  if ("float" in value) return { name, type: Type.FLOAT, f: value.float };
  if ("ints" in value) return { name, type: Type.INTS, ints: value.ints };
  return { name, type: Type.STRING, s: new TextEncoder().encode(value.string) };
}

export function valueInfo(name: string, type: ElementType, dims: Dim[]): IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: ONNX_DATA_TYPE[type],
        shape: { dim: dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

export function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

export class GraphBuilder {
  readonly nodes: INodeProto[] = [];
  readonly initializers: Initializer[] = [];
  readonly inputs: IValueInfoProto[] = [];
  readonly outputs: IValueInfoProto[] = [];
  private readonly names = new Set<string>();
  private readonly constants = new Map<string, string>();
  private counter = 0;

  input(name: string, type: ElementType, dims: Dim[]): string {
    this.claim(name);
    this.inputs.push(valueInfo(name, type, dims));
    return name;
  }

  /** Declares `value` as a graph output under `name` (renaming through Identity if needed). */
  output(value: string, name: string, type: ElementType, dims: Dim[]): void {
    if (value !== name) this.op("Identity", [value], {}, { outputs: [name] });
    this.outputs.push(valueInfo(name, type, dims));
  }

  /** A float32 weight: values in memory, a thunk producing them when written, or a slice of a file. */
  weight(name: string, dims: number[], data: Float32Array | (() => Float32Array) | FileSlice): string {
    this.claim(name);
    const count = dims.reduce((a, b) => a * b, 1);
    if (isFileSlice(data)) {
      if (data.byteLength !== count * 4) throw new Error(`initializer ${name}: ${data.byteLength} bytes for shape [${dims.join(", ")}] of float32`);
      this.initializers.push({ name, type: "float32", dims, byteLength: data.byteLength, bytes: () => readSlice(data), external: data });
      return name;
    }
    if (typeof data !== "function" && data.length !== count) {
      throw new Error(`initializer ${name}: ${data.length} values for shape [${dims.join(", ")}]`);
    }
    this.initializers.push({
      name,
      type: "float32",
      dims,
      byteLength: count * 4,
      bytes: () => {
        const values = typeof data === "function" ? data() : data;
        if (values.length !== count) throw new Error(`initializer ${name}: ${values.length} values for shape [${dims.join(", ")}]`);
        return bytesOf(values);
      },
    });
    return name;
  }

  /** A small int64 constant, shared between all nodes that use the same values. */
  int64(values: number[], dims: number[] = [values.length]): string {
    return this.constant("int64", "i64", values, dims, () => BigInt64Array.from(values.map((v) => BigInt(v))));
  }

  /** A small float32 constant, shared like int64(). */
  float32(values: number[], dims: number[] = [values.length]): string {
    return this.constant("float32", "f32", values, dims, () => Float32Array.from(values));
  }

  /** A small float64 constant, shared like int64(). */
  float64(values: number[], dims: number[] = [values.length]): string {
    return this.constant("float64", "f64", values, dims, () => Float64Array.from(values));
  }

  /** One initializer per distinct (type, shape, values), named `const_<tag>_<n>`. */
  private constant(type: ElementType, tag: string, values: number[], dims: number[], encode: () => ArrayBufferView): string {
    const key = `${tag}:${dims.join("x")}:${values.join(",")}`;
    const known = this.constants.get(key);
    if (known) return known;
    const name = this.claim(`const_${tag}_${this.counter++}`);
    const data = encode();
    this.initializers.push({ name, type, dims, byteLength: data.byteLength, bytes: () => bytesOf(data) });
    this.constants.set(key, name);
    return name;
  }

  /**
   * Appends one operator and returns its first output. Output names are generated from
   * `opts.name` (or the op type) unless given; "" in `inputs` skips an optional input.
   */
  op(opType: string, inputs: string[], attributes: Record<string, Attribute> = {}, opts: { name?: string; outputs?: (string | number)[] } = {}): string {
    return this.opMulti(opType, inputs, attributes, opts)[0];
  }

  /** Like op(), returning every output; a number in `opts.outputs` asks for that many generated names. */
  opMulti(opType: string, inputs: string[], attributes: Record<string, Attribute> = {}, opts: { name?: string; outputs?: (string | number)[] } = {}): string[] {
    const nodeName = this.claim(`${opts.name ?? opType}_${this.counter++}`);
    const outputs: string[] = [];
    for (const wanted of opts.outputs ?? [1]) {
      if (typeof wanted === "string") outputs.push(wanted === "" ? "" : this.claim(wanted));
      else for (let k = 0; k < wanted; k++) outputs.push(this.claim(`${nodeName}_out${outputs.length}`));
    }
    this.nodes.push({
      name: nodeName,
      opType,
      input: inputs,
      output: outputs,
      attribute: Object.entries(attributes).map(([k, v]) => attributeProto(k, v)),
    });
    return outputs;
  }

  private claim(name: string): string {
    if (this.names.has(name)) throw new Error(`graph value ${name} is defined twice`);
    this.names.add(name);
    return name;
  }
}
