// The model runner of the inference service: one ONNX Runtime session over a causal-LM
// graph, and step(), which runs any mix of sequences (some in prefill with many new tokens,
// some decoding one) as ONE left-padded batch and hands each sequence its next-token
// log-probabilities. Which sequences go into a step is the scheduler's business, not this
// module's; each sequence carries its own KvCache between steps, and may name its own LoRA
// adapter (AdapterInputs) when the graph has LoRA inputs.
//
// On graphs built here the head runs only where a distribution is used (the last position,
// or every new one when a request asks for allPositions) and the log-softmax comes from the
// graph, which gives log-probabilities only: every caller wants those, and a logits output
// would cost ONNX Runtime a copy per step. Graphs from elsewhere give logits, and the
// log-softmax runs in JavaScript.
import * as ort from "onnxruntime-node";
import { float16ArrayToFloat32 } from "#core/math/float16.ts";
import { logSoftmax } from "#core/math/distribution.ts";
import type { ExecutionProvider, ModelLocation, OrtSessionOptions } from "./execution-provider.ts";
import { openOrtSession } from "./execution-provider.ts";
import { AdapterFitError, AdapterInputs, loraFeeds } from "./lora-inputs.ts";
import type { LoraAdapter } from "#core/model/lora.ts";
import type { KvArray } from "./kv-cache.ts";
import { allocateKv, KvCache, kvTensor } from "./kv-cache.ts";
import type { PastStep } from "./batch-kv.ts";
import { BatchKv } from "./batch-kv.ts";
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
  /** Also return the log-probabilities at every new position (parity tests, scoring). */
  allPositions?: boolean;
  /** The LoRA adapter this sequence runs with (from prepareAdapter); absent or null: the base model. */
  adapter?: AdapterInputs | null;
}

export interface StepResult {
  /** log softmax over the full vocabulary after the last new token. */
  logProbs: Float32Array;
  /** Log-probabilities after each new token, [tokens.length, vocab] row-major; only when allPositions was asked for. */
  positionLogProbs?: Float32Array;
}

/** Padding for input_ids; masked out, so any valid id would do. */
const PAD_TOKEN = 0n;

const KV_KINDS = ["key", "value"] as const;

function asFloat32(tensor: ort.Tensor): Float32Array {
  if (tensor.type === "float32") return tensor.data as Float32Array;
  if (tensor.type === "float16") return float16ArrayToFloat32(tensor.data as Uint16Array);
  throw new Error(`logits came back as ${tensor.type}`);
}

/** Wall milliseconds of the last step() in its three parts: feeds built in JavaScript, ONNX Runtime's run, outputs copied back. */
export interface StepPhases {
  prepareMs: number;
  runMs: number;
  collectMs: number;
  /** The past was fed as the previous step left it, not copied from the caches (batch-kv.ts). */
  carriedKv: boolean;
  /** Past slots per row the step attended over (its rows' caches, and unused slots). */
  pastSlots: number;
}

export class CausalLmSession {
  /** Where the last step's time went (bench/decode-profile.ts reads it). */
  readonly lastPhases: StepPhases = { prepareMs: 0, runMs: 0, collectMs: 0, carriedKv: false, pastSlots: 0 };
  /** The batch's KV tensors between steps (see batch-kv.ts). */
  private readonly batchKv: BatchKv;

  private constructor(
    private readonly session: ort.InferenceSession,
    /** The graph's inputs and outputs as read from the model. */
    readonly io: ModelIo,
    /** Where the graph runs: "cuda" or "cpu". */
    readonly provider: ExecutionProvider,
    readonly source: string,
  ) {
    this.batchKv = new BatchKv(io);
  }

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

  /** Bytes of the batch's KV buffers the session keeps between steps (bench/stream-memory.ts reads it). */
  get batchKvBytes(): number {
    return this.batchKv.allocatedBytes;
  }

  /** An empty cache for a new sequence of this model. */
  newCache(): KvCache {
    const { numLayers, numKvHeads, headDim, kvType } = this.io;
    return new KvCache({ numLayers, numKvHeads, headDim, kvType });
  }

  /**
   * True when a step may give a sequence with a past several new tokens, so a long prompt can
   * be prefilled in chunks. Graphs built here attend over any past and any number of new
   * tokens; graphs from elsewhere may not (ONNX Runtime GenAI's GroupQueryAttention takes a
   * prompt with no past, or one token after a past).
   */
  get takesPromptAfterPast(): boolean {
    return this.io.kvOutputs === "new";
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

  /** Ends the trace that the profileFilePrefix option started; ONNX Runtime writes its JSON file now. */
  endProfiling(): void {
    this.session.endProfiling();
  }

  async release(): Promise<void> {
    await this.session.release();
  }

  /**
   * Runs every request as one batch. Row b's new tokens are left padded to the longest, with
   * attention_mask zero on each pad and position_ids continuing from the sequence's own
   * length. Its past holds its cache in slots [0, length) of the session's batch buffers
   * (graphs with new_key_values, batch-kv.ts), or, for graphs that give back the whole
   * present, in the last slots of a left-padded past copied from the caches.
   */
  async step(requests: readonly StepRequest[]): Promise<StepResult[]> {
    if (requests.length === 0) return [];
    const started = performance.now();
    this.validate(requests);
    const caches = requests.map((r) => r.cache);
    const fresh = Math.max(...requests.map((r) => r.tokens.length));
    const pastStep = this.io.kvOutputs === "new" ? this.batchKv.acquire(caches, fresh) : this.leftPaddedPast(caches);
    try {
      return await this.run(requests, pastStep, fresh, started);
    } catch (err) {
      this.batchKv.release(pastStep);
      throw err;
    }
  }

  private async run(requests: readonly StepRequest[], pastStep: PastStep, fresh: number, started: number): Promise<StepResult[]> {
    const batch = requests.length;
    const past = pastStep.slots;
    const total = past + fresh;
    const leftPadded = this.io.kvOutputs === "present";

    const inputIds = new BigInt64Array(batch * fresh).fill(PAD_TOKEN);
    const positionIds = new BigInt64Array(batch * fresh);
    const attentionMask = new BigInt64Array(batch * total);
    requests.forEach(({ cache, tokens }, b) => {
      const start = fresh - tokens.length;
      tokens.forEach((id, j) => {
        inputIds[b * fresh + start + j] = BigInt(id);
        positionIds[b * fresh + start + j] = BigInt(cache.length + j);
      });
      const pastFrom = b * total + (leftPadded ? past - cache.length : 0);
      attentionMask.fill(1n, pastFrom, pastFrom + cache.length);
      attentionMask.fill(1n, b * total + past + start, (b + 1) * total);
    });

    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor("int64", inputIds, [batch, fresh]),
      attention_mask: new ort.Tensor("int64", attentionMask, [batch, total]),
      ...pastStep.feeds,
    };
    if (this.io.hasPositionIds) feeds.position_ids = new ort.Tensor("int64", positionIds, [batch, fresh]);
    // The head runs at the last position of every row (left padding puts each row's last
    // token there), or at every new position when some request wants them all.
    const allPositions = requests.some((r) => r.allPositions);
    const kept = this.io.keepsLogits && !allPositions ? 1 : fresh;
    if (this.io.keepsLogits) feeds.num_logits_to_keep = new ort.Tensor("int64", BigInt64Array.of(allPositions ? 0n : 1n), []);
    if (this.takesAdapters) Object.assign(feeds, loraFeeds(this.io, requests.map((r) => r.adapter ?? null)));

    for (const { cache } of requests) cache.busy = true;
    const running = performance.now();
    let outputs: ort.InferenceSession.ReturnType;
    try {
      outputs = await this.session.run(feeds, this.fetches());
    } finally {
      for (const { cache } of requests) cache.busy = false;
    }
    const collecting = performance.now();

    // The new positions go to the batch buffers when the step holds them (its caches are lent to them), else to each sequence's own cache.
    const outputName = leftPadded ? "present" : "new_key_values";
    const outputLength = leftPadded ? total : fresh;
    for (let layer = 0; layer < this.io.numLayers; layer++) {
      KV_KINDS.forEach((kind, k) => {
        const output = outputs[`${outputName}.${layer}.${kind}`].data as KvArray;
        requests.forEach(({ cache, tokens }, b) => {
          if (!this.batchKv.store(pastStep, layer, k, output, b, outputLength, tokens.length, cache.length)) cache.appendFrom(layer, kind, output, b, outputLength, tokens.length);
        });
      });
    }
    for (const { cache, tokens } of requests) cache.commit(tokens.length);
    this.batchKv.release(pastStep);
    const results = this.results(requests, outputs, kept);
    Object.assign(this.lastPhases, { prepareMs: running - started, runMs: collecting - running, collectMs: performance.now() - collecting, carriedKv: pastStep.carried, pastSlots: past });
    return results;
  }

  /** For graphs that give back past and new together: each cache in the last slots of a fresh past, left padded. */
  private leftPaddedPast(caches: readonly KvCache[]): PastStep {
    const { numLayers, numKvHeads, headDim, kvType } = this.io;
    const past = Math.max(...caches.map((c) => c.length));
    const dims = [caches.length, numKvHeads, past, headDim];
    const feeds: Record<string, ort.Tensor> = {};
    const data: KvArray[] = [];
    for (let layer = 0; layer < numLayers; layer++) {
      for (const kind of KV_KINDS) {
        const values = allocateKv(kvType, caches.length * numKvHeads * past * headDim);
        caches.forEach((cache, b) => cache.copyInto(layer, kind, values, b, past));
        feeds[`past_key_values.${layer}.${kind}`] = kvTensor(kvType, values, dims);
        data.push(values);
      }
    }
    return { feeds, slots: past, target: { data, slots: past }, carried: false, shared: false };
  }

  /** The outputs to copy back: the caches' new positions, and log_probs, or logits where the graph has no log_probs. */
  private fetches(): string[] {
    const names = [];
    const prefix = this.io.kvOutputs === "new" ? "new_key_values" : "present";
    for (let layer = 0; layer < this.io.numLayers; layer++) names.push(`${prefix}.${layer}.key`, `${prefix}.${layer}.value`);
    names.push(this.io.hasLogProbs ? "log_probs" : "logits");
    return names;
  }

  private results(requests: readonly StepRequest[], outputs: ort.InferenceSession.ReturnType, kept: number): StepResult[] {
    const distribution = outputs.log_probs ?? outputs.logits;
    const rows = distribution.dims[1];
    if (rows !== kept) throw new Error(`${this.source}: the graph returned ${rows} positions per row, ${kept} were kept`);
    const vocab = distribution.dims[2];
    // Rows of log_probs are views, not copies: the binding already copied the output into a buffer of this step's own.
    const logProbs = outputs.log_probs ? (outputs.log_probs.data as Float32Array) : null;
    const logits = outputs.logits ? asFloat32(outputs.logits) : null;
    /** Log-probabilities of `count` rows of this step's output, ending at `end`. */
    const rowsEndingAt = (end: number, count: number): Float32Array => {
      if (logProbs) return logProbs.subarray(end - count * vocab, end);
      if (count === 1) return logSoftmax(logits!, end - vocab, vocab);
      const out = new Float32Array(count * vocab);
      for (let r = 0; r < count; r++) out.set(logSoftmax(logits!, end - (count - r) * vocab, vocab), r * vocab);
      return out;
    };
    return requests.map(({ tokens, allPositions }, b) => {
      const rowEnd = (b + 1) * kept * vocab;
      if (!allPositions) return { logProbs: rowsEndingAt(rowEnd, 1) };
      const positionLogProbs = rowsEndingAt(rowEnd, tokens.length);
      return { logProbs: positionLogProbs.subarray(positionLogProbs.length - vocab), positionLogProbs };
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
