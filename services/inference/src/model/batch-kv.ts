// The batch's past keys and values, kept by the session between steps for graphs that give
// back only the new positions (new_key_values, onnx-graph.ts). Copying every cache into fresh
// feed arrays each step, and the whole present tensor back out of ONNX Runtime, was the
// largest cost besides the matrix products in a 0.5B decode step at batch 64
// (bench/decode-profile.ts). Here the past is one [batch, kv_heads, slots, head_dim] buffer
// per layer and kind, each row's tokens in slots [0, length) and the rest unused (masked),
// with a few slots to spare: each step writes its rows' new positions into their next free
// slots and the buffer is fed again as it is.
//
// The buffers are the ONLY copy of their rows' positions: a sequence's KvCache is lent to
// them (kv-cache.ts) and keeps no arrays while its row is here, so a stream costs its KV
// once, not twice. When the batch changes (a row leaves or joins, the rows outgrow the spare
// slots), the rows that stay are moved within the buffers, a cache that joins is copied in
// and lent, and one that leaves gets its positions back (giveBack), unless it was discarded.
//
// The buffers lie on resizable ArrayBuffers, so they grow and shrink in place: when the rows
// outgrow their slots or more rows join, the arrays are resized and the rows moved within
// them, and when rows leave, the pages they held go back to the system. Growing by allocating
// larger arrays held the batch's KV twice until V8 collected the outgrown ones, and the
// buffers kept their largest size after the rows had left. (The 64-stream peak of the 0.5B
// pair moved by less than its run-to-run noise, 21.5 -> 21.3 MiB per stream in
// bench/stream-memory.ts: each step's log-probability buffers set it, not the KV.) V8 copies
// into arrays on resizable buffers a little slower: the 6,144 row copies of a 64-row 0.5B
// expert step took 2.2 ms against 1.4 ms on plain arrays, of a step of about 500 ms.
//
// Unused slots hold stale but finite values from earlier steps; the attention mask hides them.
import * as ort from "onnxruntime-node";
import type { FloatType } from "./model-io.ts";
import type { KvArray, KvCache, KvHolder, KvShape } from "./kv-cache.ts";
import { allocateKv, kvTensor } from "./kv-cache.ts";

const KINDS = ["key", "value"] as const;

/**
 * How far the buffers may grow in place, as a multiple of the elements they are made for:
 * address space only (pages are committed as a buffer grows), so beyond it, rarely, the rows
 * move to new buffers and the old ones wait for V8's collector, at most a quarter of the new size.
 */
export const KV_RESERVE_FACTOR = 4;

/** V8's largest maxByteLength for a resizable ArrayBuffer (Node.js 20): 4 GiB. */
export const MAX_RESIZABLE_BYTES = 2 ** 32;

/**
 * A length-tracking array of `length` KV elements that can grow in place to `reserve`, or to
 * `limitBytes`; one longer than that is a plain array, whose rows move to a new one to grow.
 */
function growableKv(type: FloatType, length: number, reserve: number, limitBytes: number): KvArray {
  const bytes = type === "float16" ? 2 : 4;
  if (length * bytes > limitBytes) return allocateKv(type, length);
  const buffer = new ArrayBuffer(length * bytes, { maxByteLength: Math.min(reserve * bytes, limitBytes) });
  return type === "float16" ? new Uint16Array(buffer) : new Float32Array(buffer);
}

/** Elements a storage array can hold without moving to a new one. */
function capacityOf(array: KvArray): number {
  const buffer = array.buffer as ArrayBuffer;
  return buffer.resizable ? buffer.maxByteLength / array.BYTES_PER_ELEMENT : array.length;
}

/** Resizes a growableKv array in place (its pages beyond `length` go back to the system); a plain one keeps its length. */
function resize(array: KvArray, length: number): void {
  const buffer = array.buffer as ArrayBuffer;
  if (buffer.resizable) buffer.resize(length * array.BYTES_PER_ELEMENT);
}

/** One step's past: the feeds, and where the rows' new positions go afterwards. */
export interface PastStep {
  feeds: Record<string, ort.Tensor>;
  /** Past slots per row in the feeds. */
  slots: number;
  /** Where store() puts the new positions: `data[layer * 2 + k]` (k: 0 key, 1 value), [batch, kv_heads, slots, head_dim]. */
  target: { data: KvArray[]; slots: number };
  /** The buffers were fed as the last step left them, without moving or copying any row. */
  carried: boolean;
  /** The step holds the session's buffers and its caches are lent to them (false: the caches keep their own positions). */
  shared: boolean;
}

/** A row that stays in the buffers when the batch changes: from row `from` to row `to`. */
interface Move {
  from: number;
  to: number;
  length: number;
}

export class BatchKv implements KvHolder {
  /** One array per layer and kind (layer * 2 + k), just long enough for its rows (from index 0). */
  private storage: KvArray[] = [];
  private slots = 0;
  /** The caches whose positions the buffers hold, by row; null for a row given back or discarded. */
  private held: (KvCache | null)[] = [];
  private inUse = false;

  /** `resizableLimitBytes`: arrays above it are plain (MAX_RESIZABLE_BYTES; tests pass less). */
  constructor(
    private readonly shape: KvShape,
    private readonly resizableLimitBytes = MAX_RESIZABLE_BYTES,
  ) {}

  /** Bytes of the buffers kept between steps. */
  get allocatedBytes(): number {
    return this.storage.reduce((n, a) => n + a.byteLength, 0);
  }

  /** The past for a step over `caches` (in batch order) adding `fresh` positions per row. Call release() after the run. */
  acquire(caches: readonly KvCache[], fresh: number): PastStep {
    const longest = Math.max(...caches.map((c) => c.length));
    // Another step of this session is in flight, or a prefill (a prompt, or a later chunk of one,
    // or a Score step) of caches not held here comes beside rows held here (which would otherwise
    // be moved out and back): arrays of the step's own; its caches keep their positions themselves.
    const prefill = longest === 0 || (fresh > 1 && !caches.some((c) => c.isLentTo(this)));
    if (this.inUse || (prefill && this.held.some((c) => c !== null))) {
      const data = Array.from({ length: this.shape.numLayers * 2 }, () => allocateKv(this.shape.kvType, caches.length * this.rowElements(longest)));
      this.copyIn(caches, longest, data, caches.keys());
      return this.step(caches.length, longest, data, { data, slots: longest }, false, false);
    }
    this.inUse = true;
    const needed = longest + fresh;
    if (this.held.length === caches.length && caches.every((c, b) => c === this.held[b]) && needed <= this.slots) {
      const data = this.views(caches.length);
      return this.step(caches.length, this.slots, data, { data, slots: this.slots }, true, true);
    }
    // Spare slots for the coming steps: an eighth of the length, at least 8, so the rows move every few steps at most.
    this.regroup(caches, Math.ceil((needed + Math.max(8, Math.ceil(needed / 8))) / 8) * 8);
    const data = this.views(caches.length);
    // A prefill of empty caches attends over no past at all; its positions land in the buffers afterwards.
    const fed = longest === 0 ? Array.from({ length: this.shape.numLayers * 2 }, () => allocateKv(this.shape.kvType, 0)) : data;
    return this.step(caches.length, longest === 0 ? 0 : this.slots, fed, { data, slots: this.slots }, false, true);
  }

  /**
   * Writes row `row`'s `count` new positions, the last of the [batch, kv_heads, fresh,
   * head_dim] output `fresh`, into its slots from `at` (its cache's length before the step);
   * false when the step does not hold the buffers (the cache appends them itself).
   */
  store(step: PastStep, layer: number, k: number, output: KvArray, row: number, fresh: number, count: number, at: number): boolean {
    if (!step.shared) return false;
    const { slots } = step.target;
    if (at + count > slots) throw new Error(`batch KV row ${row}: ${at} + ${count} positions do not fit ${slots} slots`);
    const { numKvHeads: heads, headDim: d } = this.shape;
    const target = step.target.data[layer * 2 + k];
    for (let h = 0; h < heads; h++) {
      const from = ((row * heads + h) * fresh + (fresh - count)) * d;
      target.set(output.subarray(from, from + count * d), ((row * heads + h) * slots + at) * d);
    }
    return true;
  }

  /** Ends the step. After a failure the rows still hold every committed position, so nothing is lost. */
  release(step: PastStep): void {
    if (step.shared) this.inUse = false;
  }

  /** Hands a lent cache its positions back (KvHolder): its row becomes unused. */
  giveBack(cache: KvCache): void {
    const row = this.rowOf(cache);
    const { numKvHeads: heads, headDim: d } = this.shape;
    cache.restore((layer, k, target, capacity) => {
      const source = this.storage[layer * 2 + k];
      for (let h = 0; h < heads; h++) {
        const from = (row * heads + h) * this.slots * d;
        target.set(source.subarray(from, from + cache.length * d), h * capacity * d);
      }
    });
    this.held[row] = null;
  }

  /** Forgets a lent cache's row without handing anything back (KvHolder; the sequence is done). */
  drop(cache: KvCache): void {
    this.held[this.rowOf(cache)] = null;
  }

  private rowOf(cache: KvCache): number {
    const row = this.held.indexOf(cache);
    if (row < 0) throw new Error("batch KV: the cache is not lent to these buffers");
    return row;
  }

  /** Makes the buffers hold `caches` in this order, in rows of `slots`, each cache lent to them. */
  private regroup(caches: readonly KvCache[], slots: number): void {
    const joining = new Set(caches);
    for (const c of this.held) if (c && !joining.has(c)) this.giveBack(c);
    let moves: Move[] = caches.flatMap((c, to) => (c.isLentTo(this) ? [{ from: this.rowOf(c), to, length: c.length }] : []));
    // Rows that stay in their order move in place (below); a reordering is rare: hand those back and copy them in.
    if (moves.some((m, i) => i > 0 && m.from < moves[i - 1].from)) {
      for (const m of moves) this.giveBack(caches[m.to]);
      moves = [];
    }
    // Exactly the rows and slots asked for (the slots already keep an eighth to spare): spare
    // rows or slots beyond that would be held by every stream (they were half the KV again at
    // 64 streams). While the rows move, the old layout and the new one both lie in the arrays.
    const needed = caches.length * this.rowElements(slots);
    const extent = Math.max(needed, this.held.length * this.rowElements(this.slots));
    if (this.storage.length > 0 && extent <= capacityOf(this.storage[0])) {
      for (const array of this.storage) {
        resize(array, extent);
        this.moveInPlace(array, moves, slots);
        resize(array, needed);
      }
    } else {
      const next = () => growableKv(this.shape.kvType, needed, KV_RESERVE_FACTOR * needed, this.resizableLimitBytes);
      if (this.storage.length === 0) this.storage = Array.from({ length: this.shape.numLayers * 2 }, next);
      else for (let i = 0; i < this.storage.length; i++) this.storage[i] = this.moved(this.storage[i], next(), moves, slots);
    }
    this.slots = slots;
    const staying = new Set(moves.map((m) => m.to));
    this.copyIn(caches, slots, this.storage, [...caches.keys()].filter((b) => !staying.has(b)));
    this.held = [...caches];
    for (const c of caches) c.lend(this);
  }

  /** The staying rows' positions copied from `old` (rows of this.slots) into `next` (rows of `slots`). */
  private moved(old: KvArray, next: KvArray, moves: readonly Move[], slots: number): KvArray {
    for (const s of this.segments(moves, slots)) next.set(old.subarray(s.from, s.from + s.count), s.to);
    return next;
  }

  /**
   * The same within one array. Segments keep their order (rows and heads in order), so
   * those moving towards the start are moved first to last and the others last to first:
   * none is overwritten before it has moved.
   */
  private moveInPlace(array: KvArray, moves: readonly Move[], slots: number): void {
    const segments = this.segments(moves, slots);
    for (const s of segments) if (s.to < s.from) array.copyWithin(s.to, s.from, s.from + s.count);
    for (let i = segments.length - 1; i >= 0; i--) {
      const s = segments[i];
      if (s.to > s.from) array.copyWithin(s.to, s.from, s.from + s.count);
    }
  }

  /** Each staying row's head blocks: element offsets in the old layout (rows of this.slots) and the new (rows of `slots`). */
  private segments(moves: readonly Move[], slots: number): { from: number; to: number; count: number }[] {
    const { numKvHeads: heads, headDim: d } = this.shape;
    return moves.flatMap((m) => Array.from({ length: heads }, (_, h) => ({ from: (m.from * heads + h) * this.slots * d, to: (m.to * heads + h) * slots * d, count: m.length * d })));
  }

  private rowElements(slots: number): number {
    return this.shape.numKvHeads * slots * this.shape.headDim;
  }

  private views(batch: number): KvArray[] {
    return this.storage.map((s) => s.subarray(0, batch * this.rowElements(this.slots)));
  }

  /** Copies the caches of rows `rows` from slot 0 of their rows (of `slots`) in `data`. */
  private copyIn(caches: readonly KvCache[], slots: number, data: KvArray[], rows: Iterable<number>): void {
    for (const b of rows) {
      for (let layer = 0; layer < this.shape.numLayers; layer++) KINDS.forEach((kind, k) => caches[b].copyInto(layer, kind, data[layer * 2 + k], b, slots, 0));
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
