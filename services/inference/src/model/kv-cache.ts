// The key/value cache of ONE sequence, owned by that sequence, so a continuous-batching
// scheduler can put any set of sequences into a step and drop one without touching the
// others. Stored per layer as [kv_heads, capacity, head_dim] in the graph's KV element
// type (float16 kept as raw bits); capacity doubles so appending a token is amortised O(1).
import * as ort from "onnxruntime-node";
import type { FloatType } from "./model-io.ts";

export type KvArray = Float32Array | Uint16Array;

export interface KvShape {
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  kvType: FloatType;
}

/** A zeroed array of `length` KV elements of `type` (float16 as raw bits). */
export const allocateKv = (type: FloatType, length: number): KvArray => (type === "float16" ? new Uint16Array(length) : new Float32Array(length));

/** KV elements as the ONNX Runtime tensor a graph's past input takes. */
export const kvTensor = (type: FloatType, data: KvArray, dims: readonly number[]): ort.Tensor =>
  type === "float16" ? new ort.Tensor("float16", data as Uint16Array, dims) : new ort.Tensor("float32", data as Float32Array, dims);

export class KvCache {
  /** Tokens whose keys and values are held. */
  length = 0;
  private capacity: number;
  private keys: KvArray[];
  private values: KvArray[];
  /** Counts every change of length, so a holder of a copy (BatchKv) can tell the copy is still whole. */
  revision = 0;
  /** Set while a step runs on this sequence, so it cannot enter two steps at once. */
  busy = false;

  constructor(
    readonly shape: KvShape,
    initialCapacity = 16,
  ) {
    this.capacity = initialCapacity;
    const size = shape.numKvHeads * initialCapacity * shape.headDim;
    this.keys = Array.from({ length: shape.numLayers }, () => allocateKv(shape.kvType, size));
    this.values = Array.from({ length: shape.numLayers }, () => allocateKv(shape.kvType, size));
  }

  /**
   * Copies this cache's layer into row `row` of a past tensor [batch, kv_heads, pastLength,
   * head_dim], its tokens in slots [at, at + length): by default the last ones (a left-padded
   * batch, for graphs that give back past and new together), or from slot 0 (BatchKv).
   */
  copyInto(layer: number, kind: "key" | "value", target: KvArray, row: number, pastLength: number, at = pastLength - this.length): void {
    const { numKvHeads: heads, headDim: d } = this.shape;
    const source = kind === "key" ? this.keys[layer] : this.values[layer];
    const count = this.length * d;
    for (let h = 0; h < heads; h++) {
      const from = h * this.capacity * d;
      const to = ((row * heads + h) * pastLength + at) * d;
      target.set(source.subarray(from, from + count), to);
    }
  }

  /**
   * Appends the last `count` positions of row `row` of a present tensor
   * [batch, kv_heads, totalLength, head_dim] (the tokens this step added) to one layer.
   * Call for every layer and kind, then commit(count).
   */
  appendFrom(layer: number, kind: "key" | "value", present: KvArray, row: number, totalLength: number, count: number): void {
    this.reserve(this.length + count);
    const { numKvHeads: heads, headDim: d } = this.shape;
    const target = kind === "key" ? this.keys[layer] : this.values[layer];
    for (let h = 0; h < heads; h++) {
      const from = ((row * heads + h) * totalLength + (totalLength - count)) * d;
      target.set(present.subarray(from, from + count * d), (h * this.capacity + this.length) * d);
    }
  }

  commit(count: number): void {
    this.length += count;
    this.revision++;
  }

  /** Forgets every token after the first `length` (e.g. to re-run from a shared prefix). */
  truncate(length: number): void {
    if (!Number.isInteger(length) || length < 0 || length > this.length) {
      throw new RangeError(`cannot truncate a cache of ${this.length} tokens to ${length}`);
    }
    this.length = length;
    this.revision++;
  }

  private reserve(needed: number): void {
    if (needed <= this.capacity) return;
    let capacity = this.capacity;
    while (capacity < needed) capacity *= 2;
    const { numKvHeads: heads, headDim: d, kvType } = this.shape;
    const grow = (old: KvArray): KvArray => {
      const next = allocateKv(kvType, heads * capacity * d);
      for (let h = 0; h < heads; h++) next.set(old.subarray(h * this.capacity * d, (h * this.capacity + this.length) * d), h * capacity * d);
      return next;
    };
    this.keys = this.keys.map(grow);
    this.values = this.values.map(grow);
    this.capacity = capacity;
  }
}
