// The model runner of the inference service: one ONNX Runtime session over a causal-LM
// graph, and step(), which runs any mix of sequences (some in prefill with many new tokens,
// some decoding one) as ONE left-padded batch and hands each sequence its next-token
// log-probabilities. Which sequences go into a step is the scheduler's business, not this
// module's; each sequence carries its own KvCache between steps, and may name its own LoRA
// adapter (AdapterInputs) when the graph has LoRA inputs.
//
// On graphs built here the head runs only where a distribution is used (the last position,
// or every new one when a request asks for allLogits) and the log-softmax comes from the
// graph; graphs from elsewhere get the full logits and the log-softmax in JavaScript.
import * as ort from "onnxruntime-node";
import { float16ArrayToFloat32 } from "#core/math/float16.ts";
import { logSoftmax } from "#core/math/distribution.ts";
import type { ExecutionProvider, ModelLocation, OrtSessionOptions } from "./execution-provider.ts";
import { openOrtSession } from "./execution-provider.ts";
import { AdapterFitError, AdapterInputs, loraFeeds } from "./lora-inputs.ts";
import type { LoraAdapter } from "#core/model/lora.ts";
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
  /** The LoRA adapter this sequence runs with (from prepareAdapter); absent or null: the base model. */
  adapter?: AdapterInputs | null;
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

  /**
   * Opens a model file (external data beside it is found by ONNX Runtime), in-memory bytes,
   * or in-memory bytes whose external data ONNX Runtime reads from `externalDataDir`.
   */
  static async open(model: string | Uint8Array | ({ bytes: Uint8Array } & ModelLocation), options: OrtSessionOptions = {}): Promise<CausalLmSession> {
    const source = typeof model === "string" ? model : "<in-memory model>";
    const { session, provider } = typeof model === "string" || model instanceof Uint8Array ? await openOrtSession(model, options) : await openOrtSession(model.bytes, options, model);
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

  /** True when the graph has LoRA inputs, so adapters apply without another session. */
  get takesAdapters(): boolean {
    return this.io.lora.length > 0;
  }

  /** `adapter` as this graph's LoRA inputs; AdapterFitError when the graph cannot take it. */
  prepareAdapter(adapter: LoraAdapter): AdapterInputs {
    if (!this.takesAdapters) throw new AdapterFitError(`${this.source} has no LoRA inputs`);
    return AdapterInputs.prepare(this.io, adapter);
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
    // The head runs at the last position of every row (left padding puts each row's last
    // token there), or at every new position when some request wants all its logits.
    const allLogits = requests.some((r) => r.allLogits);
    const kept = this.io.keepsLogits && !allLogits ? 1 : fresh;
    if (this.io.keepsLogits) feeds.num_logits_to_keep = new ort.Tensor("int64", BigInt64Array.of(allLogits ? 0n : 1n), []);
    if (this.takesAdapters) Object.assign(feeds, loraFeeds(this.io, requests.map((r) => r.adapter ?? null)));
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
      outputs = await this.session.run(feeds, this.fetches(allLogits));
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
    return this.results(requests, outputs, kept);
  }

  /** The outputs to copy back: the caches, and log_probs, or logits where the graph has no log_probs or they were asked for. */
  private fetches(allLogits: boolean): string[] {
    const names = [];
    for (let layer = 0; layer < this.io.numLayers; layer++) names.push(`present.${layer}.key`, `present.${layer}.value`);
    if (this.io.hasLogProbs) names.push("log_probs");
    if (allLogits || !this.io.hasLogProbs) names.push("logits");
    return names;
  }

  private results(requests: readonly StepRequest[], outputs: ort.InferenceSession.ReturnType, kept: number): StepResult[] {
    const rows = (outputs.log_probs ?? outputs.logits).dims[1];
    if (rows !== kept) throw new Error(`${this.source}: the graph returned ${rows} positions per row, ${kept} were kept`);
    const vocab = (outputs.log_probs ?? outputs.logits).dims[2];
    const logProbs = outputs.log_probs ? (outputs.log_probs.data as Float32Array) : null;
    const logits = outputs.logits ? asFloat32(outputs.logits) : null;
    return requests.map(({ tokens, allLogits }, b) => {
      const rowEnd = (b + 1) * kept * vocab;
      // A copy (a memcpy, ~0.1 ms at 151,936) so each row owns its buffer: consumers may hand it on.
      const result: StepResult = { logProbs: logProbs ? logProbs.slice(rowEnd - vocab, rowEnd) : logSoftmax(logits!, rowEnd - vocab, vocab) };
      if (allLogits) result.logits = logits!.slice(rowEnd - tokens.length * vocab, rowEnd);
      return result;
    });
  }

  private validate(requests: readonly StepRequest[]): void {
    const seen = new Set<KvCache>();
    const vocab = this.io.vocabSize;
    requests.forEach(({ cache, tokens, adapter }, b) => {
      const field = `requests[${b}]`;
      if (adapter && adapter.io !== this.io) throw new StepInputError(`${field}.adapter`, "was prepared for another session (use this session's prepareAdapter)");
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
