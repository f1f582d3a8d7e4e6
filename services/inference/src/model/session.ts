// The model runner of the inference service: one ONNX Runtime session over a causal-LM
// graph, and step(), which runs any mix of sequences (some in prefill with many new tokens,
// some decoding one) as ONE left-padded batch and hands each sequence its next-token
// log-probabilities. Which sequences go into a step is the scheduler's business, not this
// module's; each sequence carries its own KvCache between steps.
import * as ort from "onnxruntime-node";
import { float16ArrayToFloat32 } from "#core/math/float16.ts";
import { logSoftmax } from "#core/math/distribution.ts";
import type { ExecutionProvider, OrtSessionOptions } from "./execution-provider.ts";
import { openOrtSession } from "./execution-provider.ts";
import type { KvArray } from "./kv-cache.ts";
import { KvCache } from "./kv-cache.ts";
import type { ModelIo } from "./model-io.ts";
import { describeModelIo } from "./model-io.ts";

/** A request that step() cannot run (bad token ids, a cache from another model, ...). */
export class StepInputError extends Error {
  constructor(
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${field}: ${problem}`);
    this.name = "StepInputError";
  }
}

export interface StepRequest {
  /** The sequence's cache; step() appends the new tokens' keys and values to it. */
  cache: KvCache;
  /** Token ids not yet in the cache: the prompt for a prefill, one id for a decode step. */
  tokens: readonly number[];
  /** Also return the logits at every new position (parity tests, scoring). */
  allLogits?: boolean;
}

export interface StepResult {
  /** log softmax over the full vocabulary after the last new token. */
  logProbs: Float32Array;
  /** [tokens.length, vocab] row-major, only when allLogits was asked for. */
  logits?: Float32Array;
}

/** Padding for input_ids; masked out, so any valid id would do. */
const PAD_TOKEN = 0n;

const kvTensor = (type: ModelIo["kvType"], data: KvArray, dims: number[]) =>
  type === "float16" ? new ort.Tensor("float16", data as Uint16Array, dims) : new ort.Tensor("float32", data as Float32Array, dims);

function asFloat32(tensor: ort.Tensor): Float32Array {
  if (tensor.type === "float32") return tensor.data as Float32Array;
  if (tensor.type === "float16") return float16ArrayToFloat32(tensor.data as Uint16Array);
  throw new Error(`logits came back as ${tensor.type}`);
}

export class CausalLmSession {
  private constructor(
    private readonly session: ort.InferenceSession,
    /** The graph's inputs and outputs as read from the model. */
    readonly io: ModelIo,
    /** Where the graph runs: "cuda" or "cpu". */
    readonly provider: ExecutionProvider,
    readonly source: string,
  ) {}

  /** Opens a model file (external data beside it is found by ONNX Runtime) or in-memory bytes. */
  static async open(model: string | Uint8Array, options: OrtSessionOptions = {}): Promise<CausalLmSession> {
    const source = typeof model === "string" ? model : "<in-memory model>";
    const { session, provider } = await openOrtSession(model, options);
    try {
      return new CausalLmSession(session, describeModelIo(session, source), provider, source);
    } catch (err) {
      await session.release();
      throw err;
    }
  }

  /** An empty cache for a new sequence of this model. */
  newCache(): KvCache {
    const { numLayers, numKvHeads, headDim, kvType } = this.io;
    return new KvCache({ numLayers, numKvHeads, headDim, kvType });
  }

  async release(): Promise<void> {
    await this.session.release();
  }

  /**
   * Runs every request as one batch. Row b holds [pad | its cache] in the past and
   * [pad | its new tokens] in the new positions, both left padded, with attention_mask
   * zero on each pad and position_ids continuing from the sequence's own length.
   */
  async step(requests: readonly StepRequest[]): Promise<StepResult[]> {
    if (requests.length === 0) return [];
    this.validate(requests);
    const batch = requests.length;
    const past = Math.max(...requests.map((r) => r.cache.length));
    const fresh = Math.max(...requests.map((r) => r.tokens.length));
    const total = past + fresh;

    const inputIds = new BigInt64Array(batch * fresh).fill(PAD_TOKEN);
    const positionIds = new BigInt64Array(batch * fresh);
    const attentionMask = new BigInt64Array(batch * total);
    requests.forEach(({ cache, tokens }, b) => {
      const start = fresh - tokens.length;
      tokens.forEach((id, j) => {
        inputIds[b * fresh + start + j] = BigInt(id);
        positionIds[b * fresh + start + j] = BigInt(cache.length + j);
      });
      attentionMask.fill(1n, b * total + past - cache.length, b * total + past);
      attentionMask.fill(1n, b * total + past + start, (b + 1) * total);
    });

    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor("int64", inputIds, [batch, fresh]),
      attention_mask: new ort.Tensor("int64", attentionMask, [batch, total]),
    };
    if (this.io.hasPositionIds) feeds.position_ids = new ort.Tensor("int64", positionIds, [batch, fresh]);
    const { numLayers, numKvHeads, headDim, kvType } = this.io;
    const pastDims = [batch, numKvHeads, past, headDim];
    for (let layer = 0; layer < numLayers; layer++) {
      for (const kind of ["key", "value"] as const) {
        const data = kvType === "float16" ? new Uint16Array(batch * numKvHeads * past * headDim) : new Float32Array(batch * numKvHeads * past * headDim);
        requests.forEach(({ cache }, b) => cache.copyInto(layer, kind, data, b, past));
        feeds[`past_key_values.${layer}.${kind}`] = kvTensor(kvType, data, pastDims);
      }
    }

    for (const { cache } of requests) cache.busy = true;
    let outputs: ort.InferenceSession.ReturnType;
    try {
      outputs = await this.session.run(feeds);
    } finally {
      for (const { cache } of requests) cache.busy = false;
    }

    for (let layer = 0; layer < numLayers; layer++) {
      for (const kind of ["key", "value"] as const) {
        const present = outputs[`present.${layer}.${kind}`];
        requests.forEach(({ cache, tokens }, b) => cache.appendFrom(layer, kind, present.data as KvArray, b, total, tokens.length));
      }
    }
    for (const { cache, tokens } of requests) cache.commit(tokens.length);
    return this.results(requests, outputs.logits, fresh);
  }

  private results(requests: readonly StepRequest[], logitsTensor: ort.Tensor, fresh: number): StepResult[] {
    const vocab = logitsTensor.dims[2];
    const logits = asFloat32(logitsTensor);
    return requests.map(({ tokens, allLogits }, b) => {
      const rowEnd = (b + 1) * fresh * vocab;
      const result: StepResult = { logProbs: logSoftmax(logits, rowEnd - vocab, vocab) };
      if (allLogits) result.logits = logits.slice(rowEnd - tokens.length * vocab, rowEnd);
      return result;
    });
  }

  private validate(requests: readonly StepRequest[]): void {
    const seen = new Set<KvCache>();
    const vocab = this.io.vocabSize;
    requests.forEach(({ cache, tokens }, b) => {
      const field = `requests[${b}]`;
      if (!(cache instanceof KvCache)) throw new StepInputError(`${field}.cache`, "is not a KvCache from newCache()");
      const { numLayers, numKvHeads, headDim, kvType } = cache.shape;
      const io = this.io;
      if (numLayers !== io.numLayers || numKvHeads !== io.numKvHeads || headDim !== io.headDim || kvType !== io.kvType) {
        throw new StepInputError(`${field}.cache`, `belongs to another model (${numLayers} layers, ${numKvHeads}x${headDim} ${kvType} KV; this one has ${io.numLayers}, ${io.numKvHeads}x${io.headDim} ${io.kvType})`);
      }
      if (seen.has(cache)) throw new StepInputError(`${field}.cache`, "appears twice in one step");
      if (cache.busy) throw new StepInputError(`${field}.cache`, "is already in a running step");
      seen.add(cache);
      if (tokens.length === 0) throw new StepInputError(`${field}.tokens`, "is empty; every sequence in a step needs at least one new token");
      tokens.forEach((id, j) => {
        if (!Number.isInteger(id) || id < 0 || (vocab !== null && id >= vocab)) {
          throw new StepInputError(`${field}.tokens[${j}]`, `token id ${id} is outside the vocabulary [0, ${vocab ?? "?"})`);
        }
      });
    });
  }
}
