// LoRA adapters as the served graph takes them: for each adapted projection, A^T [in, rank]
// and scale * B^T [rank, out], fed as lora_a / lora_b, and one lora_mask [rows, 1, rank]
// for all projections, so the graph adds ((x A^T) * mask)(s B^T) to x W^T. An adapter is a
// few small resident tensors built once when it is loaded; the base weights are never copied.
// A batch whose rows share one adapter (or the base model: rank 0) feeds its factors as they
// are with a mask of ones. A batch mixing adapters feeds the distinct adapters side by side
// along the rank axis (built once per set of adapters and kept for the next steps) and a
// mask whose row b is one on row b's adapter's columns only: the per-step cost of mixing is
// a mask of rows x total rank floats and a few extra rank columns of matmul, never a
// per-row copy of any factor.
import * as ort from "onnxruntime-node";
import type { LoraAdapter } from "#core/model/lora.ts";
import { loraScale } from "#core/model/lora.ts";
import { linearWeightName } from "#core/model/weights.ts";
import type { LoraSlot, ModelIo } from "./model-io.ts";
import { LORA_MASK } from "./onnx-graph.ts";

/** An adapter the graph cannot take (a projection without LoRA inputs, a shape that differs). */
export class AdapterFitError extends Error {
  constructor(readonly problem: string) {
    super(problem);
    this.name = "AdapterFitError";
  }
}

interface Factors {
  /** A^T, [in, rank] row-major. */
  a: Float32Array;
  /** scale * B^T, [rank, out] row-major. */
  b: Float32Array;
}

type Feeds = Record<string, ort.Tensor>;

/** Zeros for projections an adapter leaves alone, shared by every adapter (read-only to ONNX Runtime). */
const zeros = new Map<number, Float32Array>();
function zerosOf(length: number): Float32Array {
  let z = zeros.get(length);
  if (!z) {
    z = new Float32Array(length);
    zeros.set(length, z);
  }
  return z;
}

let nextId = 0;

/** One adapter, prepared for one graph's LoRA inputs. */
export class AdapterInputs {
  /** The feeds when every row of a batch uses this adapter (mask rows: 1, broadcast over the batch). */
  readonly shared: Readonly<Feeds>;
  /** Bytes of its own factors (the zeros of projections it leaves alone are shared, not counted). */
  readonly byteLength: number;
  /** Orders adapters within a mixed batch's stack, so the same set always stacks the same way. */
  readonly id = nextId++;

  private constructor(
    /** The graph it was prepared for; a session refuses inputs made for another. */
    readonly io: ModelIo,
    readonly rank: number,
    readonly factors: ReadonlyMap<string, Factors>,
  ) {
    const shared: Feeds = {};
    let bytes = 0;
    for (const slot of io.lora) {
      const f = factors.get(slot.a);
      if (f) bytes += f.a.byteLength + f.b.byteLength;
      shared[slot.a] = new ort.Tensor("float32", f?.a ?? zerosOf(slot.inFeatures * rank), [slot.inFeatures, rank]);
      shared[slot.b] = new ort.Tensor("float32", f?.b ?? zerosOf(rank * slot.outFeatures), [rank, slot.outFeatures]);
    }
    shared[LORA_MASK] = new ort.Tensor("float32", new Float32Array(rank).fill(1), [1, 1, rank]);
    this.shared = shared;
    this.byteLength = bytes;
  }

  /** Prepares `adapter` for the graph described by `io`; throws AdapterFitError when it does not fit. */
  static prepare(io: ModelIo, adapter: LoraAdapter): AdapterInputs {
    const scale = loraScale(adapter.settings);
    const rank = adapter.settings.rank;
    const slotByWeight = new Map(io.lora.map((slot) => [linearWeightName(slot.layer, slot.module), slot]));
    const factors = new Map<string, Factors>();
    for (const [name, { a, b }] of adapter.pairs) {
      const slot = slotByWeight.get(name);
      if (!slot) throw new AdapterFitError(`the served graph has no LoRA inputs for ${name}`);
      const [rankA, inFeatures] = a.shape;
      const [outFeatures, rankB] = b.shape;
      if (inFeatures !== slot.inFeatures || outFeatures !== slot.outFeatures || rankA !== rank || rankB !== rank) {
        throw new AdapterFitError(`${name}: lora_A [${a.shape.join(", ")}] and lora_B [${b.shape.join(", ")}] do not fit a [${slot.outFeatures}, ${slot.inFeatures}] projection at rank ${rank}`);
      }
      const aT = new Float32Array(inFeatures * rank);
      for (let k = 0; k < rank; k++) for (let i = 0; i < inFeatures; i++) aT[i * rank + k] = a.data[k * inFeatures + i];
      const bT = new Float32Array(rank * outFeatures);
      for (let o = 0; o < outFeatures; o++) for (let k = 0; k < rank; k++) bT[k * outFeatures + o] = scale * b.data[o * rank + k];
      factors.set(slot.a, { a: aT, b: bT });
    }
    return new AdapterInputs(io, rank, factors);
  }

  /** Drops the kept mixed-batch stacks holding this adapter, once nothing will run it again. */
  retire(): void {
    const kept = stacks.get(this.io);
    if (!kept) return;
    for (const [key, stack] of kept) if (stack.adapters.includes(this)) kept.delete(key);
  }
}

/** A set of distinct adapters side by side along the rank axis: block j holds adapter j. */
interface Stack {
  adapters: readonly AdapterInputs[];
  /** Where each adapter's columns start. */
  offsets: ReadonlyMap<AdapterInputs, number>;
  rank: number;
  feeds: Feeds;
}

/** Stacks kept per graph: a tick's prefill and decode batches, and a set or two changing, reuse theirs. */
const STACKS_KEPT = 4;
const stacks = new WeakMap<ModelIo, Map<string, Stack>>();
const baseFeeds = new WeakMap<ModelIo, Feeds>();

function stackOf(io: ModelIo, adapters: readonly AdapterInputs[]): Stack {
  const key = adapters.map((x) => x.id).join(",");
  let kept = stacks.get(io);
  if (!kept) {
    kept = new Map();
    stacks.set(io, kept);
  }
  const found = kept.get(key);
  if (found) {
    // Most recently used last, so the oldest is the one dropped.
    kept.delete(key);
    kept.set(key, found);
    return found;
  }
  const offsets = new Map<AdapterInputs, number>();
  let rank = 0;
  for (const x of adapters) {
    offsets.set(x, rank);
    rank += x.rank;
  }
  const feeds: Feeds = {};
  for (const slot of io.lora) {
    const { inFeatures: n, outFeatures: m } = slot;
    const a = new Float32Array(n * rank);
    const b = new Float32Array(rank * m);
    for (const x of adapters) {
      const f = x.factors.get(slot.a);
      if (!f) continue;
      const at = offsets.get(x)!;
      const r = x.rank;
      for (let i = 0; i < n; i++) for (let k = 0; k < r; k++) a[i * rank + at + k] = f.a[i * r + k];
      b.set(f.b, at * m);
    }
    feeds[slot.a] = new ort.Tensor("float32", a, [n, rank]);
    feeds[slot.b] = new ort.Tensor("float32", b, [rank, m]);
  }
  const stack = { adapters, offsets, rank, feeds };
  kept.set(key, stack);
  if (kept.size > STACKS_KEPT) kept.delete(kept.keys().next().value!);
  return stack;
}

/** The LoRA feeds (lora_a, lora_b, lora_mask) for a batch whose row i runs `adapters[i]` (null: the base model). */
export function loraFeeds(io: ModelIo, adapters: readonly (AdapterInputs | null)[]): Feeds {
  const first = adapters[0];
  if (adapters.every((x) => x === first)) {
    if (first) return first.shared;
    let base = baseFeeds.get(io);
    if (!base) {
      base = { [LORA_MASK]: new ort.Tensor("float32", new Float32Array(0), [1, 1, 0]) };
      for (const slot of io.lora) {
        base[slot.a] = new ort.Tensor("float32", new Float32Array(0), [slot.inFeatures, 0]);
        base[slot.b] = new ort.Tensor("float32", new Float32Array(0), [0, slot.outFeatures]);
      }
      baseFeeds.set(io, base);
    }
    return base;
  }
  const distinct = [...new Set(adapters.filter((x): x is AdapterInputs => x !== null))].sort((x, y) => x.id - y.id);
  // One adapter beside base rows needs no stack: its own factors, masked off on the base rows.
  const stack: Pick<Stack, "offsets" | "rank" | "feeds"> =
    distinct.length === 1 ? { offsets: new Map([[distinct[0], 0]]), rank: distinct[0].rank, feeds: distinct[0].shared } : stackOf(io, distinct);
  const mask = new Float32Array(adapters.length * stack.rank);
  adapters.forEach((x, row) => {
    if (x) mask.fill(1, row * stack.rank + stack.offsets.get(x)!, row * stack.rank + stack.offsets.get(x)! + x.rank);
  });
  return { ...stack.feeds, [LORA_MASK]: new ort.Tensor("float32", mask, [adapters.length, 1, stack.rank]) };
}
