// LoRA adapters as the served graph takes them: for each adapted projection, A^T [in, rank]
// and scale * B^T [rank, out], fed as lora_a / lora_b so the graph adds (x A^T)(s B^T) to
// x W^T. An adapter is a few small resident tensors built once when it is loaded; the base
// weights are never copied. A batch whose rows share one adapter (or the base model: rank 0)
// feeds it once with lora_batch 1; a batch mixing adapters gets per-row stacks, zero padded
// to the largest rank, so each row sees exactly its own adapter.
import * as ort from "onnxruntime-node";
import type { LoraAdapter } from "#core/model/lora.ts";
import { loraScale } from "#core/model/lora.ts";
import { linearWeightName } from "#core/model/weights.ts";
import type { LoraSlot, ModelIo } from "./model-io.ts";

/** An adapter the graph cannot take (a projection without LoRA inputs, a shape that differs). */
export class AdapterFitError extends Error {
  constructor(readonly problem: string) {
    super(problem);
    this.name = "AdapterFitError";
  }
}

interface Factors {
  rank: number;
  /** A^T, [in, rank] row-major. */
  a: Float32Array;
  /** scale * B^T, [rank, out] row-major. */
  b: Float32Array;
}

const zeroRank = (slot: LoraSlot) => ({
  [slot.a]: new ort.Tensor("float32", new Float32Array(0), [1, slot.inFeatures, 0]),
  [slot.b]: new ort.Tensor("float32", new Float32Array(0), [1, 0, slot.outFeatures]),
});

/** One adapter, prepared for one graph's LoRA inputs. */
export class AdapterInputs {
  /** The feeds when every row of a batch uses this adapter (lora_batch 1, broadcast over rows). */
  readonly shared: Readonly<Record<string, ort.Tensor>>;
  readonly byteLength: number;

  private constructor(
    /** The graph it was prepared for; a session refuses inputs made for another. */
    readonly io: ModelIo,
    readonly factors: ReadonlyMap<string, Factors>,
  ) {
    const shared: Record<string, ort.Tensor> = {};
    let bytes = 0;
    for (const slot of io.lora) {
      const f = factors.get(slot.a);
      if (!f) {
        Object.assign(shared, zeroRank(slot));
        continue;
      }
      shared[slot.a] = new ort.Tensor("float32", f.a, [1, slot.inFeatures, f.rank]);
      shared[slot.b] = new ort.Tensor("float32", f.b, [1, f.rank, slot.outFeatures]);
      bytes += f.a.byteLength + f.b.byteLength;
    }
    this.shared = shared;
    this.byteLength = bytes;
  }

  /** Prepares `adapter` for the graph described by `io`; throws AdapterFitError when it does not fit. */
  static prepare(io: ModelIo, adapter: LoraAdapter): AdapterInputs {
    const scale = loraScale(adapter.settings);
    const slotByWeight = new Map(io.lora.map((slot) => [linearWeightName(slot.layer, slot.module), slot]));
    const factors = new Map<string, Factors>();
    for (const [name, { a, b }] of adapter.pairs) {
      const slot = slotByWeight.get(name);
      if (!slot) throw new AdapterFitError(`the served graph has no LoRA inputs for ${name}`);
      const [rank, inFeatures] = a.shape;
      const [outFeatures, rankB] = b.shape;
      if (inFeatures !== slot.inFeatures || outFeatures !== slot.outFeatures || rankB !== rank) {
        throw new AdapterFitError(`${name}: lora_A [${a.shape.join(", ")}] and lora_B [${b.shape.join(", ")}] do not fit a [${slot.outFeatures}, ${slot.inFeatures}] projection`);
      }
      const aT = new Float32Array(inFeatures * rank);
      for (let k = 0; k < rank; k++) for (let i = 0; i < inFeatures; i++) aT[i * rank + k] = a.data[k * inFeatures + i];
      const bT = new Float32Array(rank * outFeatures);
      for (let o = 0; o < outFeatures; o++) for (let k = 0; k < rank; k++) bT[k * outFeatures + o] = scale * b.data[o * rank + k];
      factors.set(slot.a, { rank, a: aT, b: bT });
    }
    return new AdapterInputs(io, factors);
  }
}

const baseFeeds = new WeakMap<ModelIo, Record<string, ort.Tensor>>();

/** The lora_a / lora_b feeds for a batch whose row i runs `adapters[i]` (null: the base model). */
export function loraFeeds(io: ModelIo, adapters: readonly (AdapterInputs | null)[]): Record<string, ort.Tensor> {
  const first = adapters[0];
  if (adapters.every((x) => x === first)) {
    if (first) return first.shared;
    let base = baseFeeds.get(io);
    if (!base) {
      base = Object.assign({}, ...io.lora.map(zeroRank)) as Record<string, ort.Tensor>;
      baseFeeds.set(io, base);
    }
    return base;
  }
  const batch = adapters.length;
  const feeds: Record<string, ort.Tensor> = {};
  for (const slot of io.lora) {
    const rows = adapters.map((x) => x?.factors.get(slot.a));
    const rank = Math.max(0, ...rows.map((f) => f?.rank ?? 0));
    const { inFeatures: n, outFeatures: m } = slot;
    const a = new Float32Array(batch * n * rank);
    const b = new Float32Array(batch * rank * m);
    rows.forEach((f, row) => {
      if (!f) return;
      // Ranks past the row's own stay zero in both factors.
      for (let i = 0; i < n; i++) a.set(f.a.subarray(i * f.rank, (i + 1) * f.rank), (row * n + i) * rank);
      b.set(f.b, row * rank * m);
    });
    feeds[slot.a] = new ort.Tensor("float32", a, [batch, n, rank]);
    feeds[slot.b] = new ort.Tensor("float32", b, [batch, rank, m]);
  }
  return feeds;
}
