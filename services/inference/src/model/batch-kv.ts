// The batch's past keys and values, kept by the session between steps for graphs that give
// back only the new positions (new_key_values, onnx-graph.ts). Each sequence still owns its
// KvCache, so the scheduler may regroup sequences at any step; but copying every cache into
// fresh feed arrays each step, and the whole present tensor back out of ONNX Runtime, was
// the largest cost besides the matrix products in a 0.5B decode step at batch 64
// (bench/decode-profile.ts). Here the past is one [batch, kv_heads, slots, head_dim] buffer
// per layer and kind, each row's tokens in slots [0, length) and the rest unused (masked),
// with a few slots to spare: while the next step runs the same caches in the same order,
// untouched in between, each row's new positions are written into its next free slots (a
// copy of those positions only) and the buffer is fed again as it is. Any other batch, or
// one that has outgrown the spare slots, is copied in from the caches once.
//
// Unused slots hold stale but finite values from earlier steps; the attention mask hides them.
import * as ort from "onnxruntime-node";
import type { KvArray, KvCache, KvShape } from "./kv-cache.ts";
import { allocateKv, kvTensor } from "./kv-cache.ts";

const KINDS = ["key", "value"] as const;

/** One step's past: the feeds, and where the rows' new positions go afterwards. */
export interface PastStep {
  feeds: Record<string, ort.Tensor>;
  /** Past slots per row in the feeds. */
  slots: number;
  /** Where store() puts the new positions: `data[layer * 2 + k]` (k: 0 key, 1 value), [batch, kv_heads, slots, head_dim]; the fed past itself, except after a prefill of empty caches. */
  target: { data: KvArray[]; slots: number };
  /** The buffers were fed as the last step left them, without copying from the caches. */
  carried: boolean;
  /** The step holds the session's buffers (false: another step had them; this one built its own). */
  shared: boolean;
}

export class BatchKv {
  private storage: KvArray[] = [];
  private slots = 0;
  /** The rows the buffers hold, with each cache's revision; null when they hold nothing reusable. */
  private held: { caches: readonly KvCache[]; revisions: number[] } | null = null;
  private inUse = false;

  constructor(private readonly shape: KvShape) {}

  /** The past for a step over `caches` (in batch order) adding `fresh` positions per row. Call release() after the run. */
  acquire(caches: readonly KvCache[], fresh: number): PastStep {
    const longest = Math.max(...caches.map((c) => c.length));
    if (this.inUse) {
      // Another step of this session is in flight: exact-size arrays of its own, nothing kept.
      const data = Array.from({ length: this.shape.numLayers * 2 }, () => allocateKv(this.shape.kvType, caches.length * this.rowElements(longest)));
      this.copyFrom(caches, longest, data);
      return this.step(caches.length, longest, data, { data, slots: longest }, false, false);
    }
    this.inUse = true;
    const held = this.held;
    if (held && held.caches.length === caches.length && caches.every((c, b) => c === held.caches[b] && c.revision === held.revisions[b]) && longest <= this.slots) {
      const data = this.views(caches.length);
      return this.step(caches.length, this.slots, data, { data, slots: this.slots }, true, true);
    }
    // Spare slots for the coming steps: an eighth of the length, at least 8, so a copy from the caches comes every few steps at most.
    const needed = longest + fresh;
    this.slots = Math.ceil((needed + Math.max(8, Math.ceil(needed / 8))) / 8) * 8;
    const elements = caches.length * this.rowElements(this.slots);
    if ((this.storage[0]?.length ?? -1) < elements) {
      this.storage = Array.from({ length: this.shape.numLayers * 2 }, () => allocateKv(this.shape.kvType, Math.ceil(elements * 1.25)));
    }
    const data = this.views(caches.length);
    if (longest === 0) {
      // A prefill of empty caches attends over no past at all; its positions land in the buffers afterwards.
      const none = Array.from({ length: this.shape.numLayers * 2 }, () => allocateKv(this.shape.kvType, 0));
      return this.step(caches.length, 0, none, { data, slots: this.slots }, false, true);
    }
    this.copyFrom(caches, this.slots, data);
    return this.step(caches.length, this.slots, data, { data, slots: this.slots }, false, true);
  }

  /**
   * Writes row `row`'s `count` new positions, the last of the [batch, kv_heads, fresh,
   * head_dim] output `fresh`, into its slots from `at` (its cache's length before the step),
   * when they fit; returns false when they do not (the next step copies from the caches).
   */
  store(step: PastStep, layer: number, k: number, output: KvArray, row: number, fresh: number, count: number, at: number): boolean {
    const { slots } = step.target;
    if (!step.shared || at + count > slots) return false;
    const { numKvHeads: heads, headDim: d } = this.shape;
    const target = step.target.data[layer * 2 + k];
    for (let h = 0; h < heads; h++) {
      const from = ((row * heads + h) * fresh + (fresh - count)) * d;
      target.set(output.subarray(from, from + count * d), ((row * heads + h) * slots + at) * d);
    }
    return true;
  }

  /** Ends the step; `caches` (null after a failure or when some row's positions did not fit) are what the buffers now hold. */
  release(step: PastStep, caches: readonly KvCache[] | null): void {
    if (!step.shared) return;
    this.inUse = false;
    this.held = caches ? { caches, revisions: caches.map((c) => c.revision) } : null;
  }

  private rowElements(slots: number): number {
    return this.shape.numKvHeads * slots * this.shape.headDim;
  }

  private views(batch: number): KvArray[] {
    return this.storage.map((s) => s.subarray(0, batch * this.rowElements(this.slots)));
  }

  private copyFrom(caches: readonly KvCache[], slots: number, data: KvArray[]): void {
    for (let layer = 0; layer < this.shape.numLayers; layer++) {
      KINDS.forEach((kind, k) => caches.forEach((cache, b) => cache.copyInto(layer, kind, data[layer * 2 + k], b, slots, 0)));
    }
  }

  private step(batch: number, slots: number, data: KvArray[], target: PastStep["target"], carried: boolean, shared: boolean): PastStep {
    const dims = [batch, this.shape.numKvHeads, slots, this.shape.headDim];
    const feeds: Record<string, ort.Tensor> = {};
    for (let layer = 0; layer < this.shape.numLayers; layer++) {
      KINDS.forEach((kind, k) => (feeds[`past_key_values.${layer}.${kind}`] = kvTensor(this.shape.kvType, data[layer * 2 + k], dims)));
    }
    return { feeds, slots, target, carried, shared };
  }
}
