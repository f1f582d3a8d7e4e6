// The key/value cache of ONE sequence, owned by that sequence, so a continuous-batching
// scheduler can put any set of sequences into a step and drop one without touching the
// others. Stored per layer as [kv_heads, capacity, head_dim] in the graph's KV element
// type (float16 kept as raw bits). While a session's batch buffers hold the sequence's
// positions (batch-kv.ts), those are the only copy: the cache is lent to them, keeps no
// arrays of its own, and gets its positions back the moment anything else needs them.
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

/** What holds a lent cache's positions (BatchKv). */
export interface KvHolder {
  /** Hands the positions back through KvCache.restore. */
  giveBack(cache: KvCache): void;
  /** Forgets them (the cache is discarded). */
  drop(cache: KvCache): void;
}

/**
 * Capacity for `needed` positions: an eighth more (at least 16), in steps of 16, so appending
 * a token stays amortised O(1) while a cache holds at most about 12% unused; doubling left up
 * to half of it unused (256 slots for a 64 + 128-token trajectory).
 */
export const capacityFor = (needed: number) => Math.ceil((needed + Math.max(16, Math.ceil(needed / 8))) / 16) * 16;

export class KvCache {
  /** Tokens whose keys and values are held. */
  length = 0;
  private capacity = 0;
  private keys: KvArray[] = [];
  private values: KvArray[] = [];
  /** The batch buffers holding this cache's positions instead of its own arrays, or null. */
  private holder: KvHolder | null = null;
  /** Set while a step runs on this sequence, so it cannot enter two steps at once. */
  busy = false;

  constructor(readonly shape: KvShape) {}

  /** Bytes of the arrays this cache holds itself (its capacity; none while lent). */
  get allocatedBytes(): number {
    return [...this.keys, ...this.values].reduce((n, a) => n + a.byteLength, 0);
  }

  /** True while `holder` holds this cache's positions (the only copy). */
  isLentTo(holder: KvHolder): boolean {
    return this.holder === holder;
  }

  /** Hands this cache's positions over to `holder`, which already holds a copy of them; the cache's own arrays go. */
  lend(holder: KvHolder): void {
    if (this.holder === holder) return;
    this.own();
    this.holder = holder;
    this.keys = [];
    this.values = [];
    this.capacity = 0;
  }

  /**
   * Takes the positions back from the holder: `read(layer, k, target, capacity)` writes the
   * positions of layer `layer`, kind k (0 key, 1 value) into `target`, laid out
   * [kv_heads, capacity, head_dim]. Called by the holder (giveBack).
   */
  restore(read: (layer: number, k: number, target: KvArray, capacity: number) => void): void {
    const { numLayers, numKvHeads, headDim, kvType } = this.shape;
    const capacity = capacityFor(this.length);
    const arrays = Array.from({ length: numLayers * 2 }, (_, i) => {
      const target = allocateKv(kvType, numKvHeads * capacity * headDim);
      read(i >> 1, i & 1, target, capacity);
      return target;
    });
    this.keys = arrays.filter((_, i) => i % 2 === 0);
    this.values = arrays.filter((_, i) => i % 2 === 1);
    this.capacity = capacity;
    this.holder = null;
  }

  /**
   * Copies this cache's layer into row `row` of a past tensor [batch, kv_heads, pastLength,
   * head_dim], its tokens in slots [at, at + length): by default the last ones (a left-padded
   * batch, for graphs that give back past and new together), or from slot 0 (BatchKv).
   */
  copyInto(layer: number, kind: "key" | "value", target: KvArray, row: number, pastLength: number, at = pastLength - this.length): void {
    this.own();
    if (this.length === 0) return;
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
    this.own();
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
  }

  /** Forgets every token after the first `length` (e.g. to re-run from a shared prefix); a holder's copy of the first ones stays right. */
  truncate(length: number): void {
    if (!Number.isInteger(length) || length < 0 || length > this.length) {
      throw new RangeError(`cannot truncate a cache of ${this.length} tokens to ${length}`);
    }
    this.length = length;
  }

  /** Forgets every position and frees what holds them, without copying anything (the sequence is done). */
  discard(): void {
    this.holder?.drop(this);
    this.holder = null;
    this.keys = [];
    this.values = [];
    this.capacity = 0;
    this.length = 0;
  }

  /** Brings a lent cache's positions back into arrays of its own. */
  private own(): void {
    this.holder?.giveBack(this);
  }

  private reserve(needed: number): void {
    if (needed <= this.capacity) return;
    const capacity = capacityFor(needed);
    const { numKvHeads: heads, headDim: d, kvType } = this.shape;
    const grow = (old: KvArray | undefined): KvArray => {
      const next = allocateKv(kvType, heads * capacity * d);
      if (old) for (let h = 0; h < heads; h++) next.set(old.subarray(h * this.capacity * d, (h * this.capacity + this.length) * d), h * capacity * d);
      return next;
    };
    const layers = Array.from({ length: this.shape.numLayers }, (_, i) => i);
    this.keys = layers.map((i) => grow(this.keys[i]));
    this.values = layers.map((i) => grow(this.values[i]));
    this.capacity = capacity;
  }
}
