// The served graph's own features at a small shape: the head only at kept positions, the
// log-softmax from the graph (its only distribution output), LoRA as a side branch (alone and mixed per batch row), and
// weights that ONNX Runtime reads from a safetensors file instead of the graph's bytes.
import { mkdirSync, mkdtempSync, renameSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LoraAdapter } from "#core/model/lora.ts";
import { mergeLora, randomLoraAdapter } from "#core/model/lora.ts";
import type { LinearModule } from "#core/model/weights.ts";
import { locateModelWeights, writeModelDir } from "#core/formats/model-dir.ts";
import { buildOnnxModel, buildServedGraph, fileBackedWeights } from "./export.ts";
import { CausalLmSession, StepInputError } from "./session.ts";
import type { AdapterInputs } from "./lora-inputs.ts";
import { AdapterFitError } from "./lora-inputs.ts";
import { randomWeights, tinyConfig, tinyConfigJson } from "./testing/random-model.ts";
import { maxAbsDiff, rows } from "./testing/compare.ts";

const configJson = tinyConfigJson("qwen2", { head_dim: 12, tie_word_embeddings: true });
const config = tinyConfig("qwen2", { head_dim: 12, tie_word_embeddings: true });
const weights = randomWeights(config, 77);
const V = config.vocabSize;
const PROMPTS = [
  [3, 9, 27, 50, 1, 8],
  [44, 2],
  [7, 7, 13, 60],
];

/** A random adapter (B not zero, so the branch changes the distributions). */
const randomAdapter = (seed: number, rank: number, targetModules: LinearModule[]): LoraAdapter => randomLoraAdapter(config, seed, { rank, alpha: 2 * rank, dropout: 0, targetModules }, 0.15);

const first = randomAdapter(1, 4, ["q_proj", "v_proj"]);
const second = randomAdapter(2, 2, ["k_proj", "o_proj", "gate_proj", "down_proj"]);

let served: CausalLmSession;
beforeAll(async () => {
  served = await CausalLmSession.open(buildOnnxModel(config, weights), { executionProvider: "cpu", threads: 1 });
});
afterAll(() => served.release());

async function allPositions(session: CausalLmSession, tokens: number[], adapter: AdapterInputs | null = null) {
  const [r] = await session.step([{ cache: session.newCache(), tokens, allPositions: true, adapter }]);
  return r;
}

describe("the head only at the kept positions", () => {
  it("a prefill without allPositions gives the last row of the full computation, from the graph's log_probs", async () => {
    expect(served.io).toMatchObject({ keepsLogits: true, hasLogProbs: true });
    for (const tokens of PROMPTS) {
      const full = await allPositions(served, tokens);
      const [kept] = await served.step([{ cache: served.newCache(), tokens }]);
      expect(kept.positionLogProbs).toBeUndefined();
      const lastRow = rows(full.positionLogProbs!, V, tokens.length - 1, tokens.length);
      expect(maxAbsDiff(kept.logProbs, lastRow)).toBeLessThan(1e-5);
      expect(maxAbsDiff(kept.logProbs, full.logProbs)).toBeLessThan(1e-5);
    }
  });

  it("in a batch where one row asks for every position, every row still gets its own rows and last distribution", async () => {
    const alone = await Promise.all(PROMPTS.map((tokens) => allPositions(served, tokens)));
    const batch = await served.step(PROMPTS.map((tokens, b) => ({ cache: served.newCache(), tokens, allPositions: b === 1 })));
    batch.forEach((r, b) => {
      expect(maxAbsDiff(r.logProbs, alone[b].logProbs)).toBeLessThan(1e-5);
      if (b === 1) expect(maxAbsDiff(r.positionLogProbs!, alone[b].positionLogProbs!)).toBeLessThan(1e-5);
      else expect(r.positionLogProbs).toBeUndefined();
    });
  });

  it("a graph without the input (a standalone export) still works, with the log-softmax in JavaScript", async () => {
    // Same weights, same graph builder: only the LoRA inputs are left out.
    const plain = await CausalLmSession.open(buildOnnxModel(config, weights, { loraModules: [] }), { executionProvider: "cpu", threads: 1 });
    expect(plain.takesAdapters).toBe(false);
    const [r] = await plain.step([{ cache: plain.newCache(), tokens: PROMPTS[0] }]);
    const reference = await allPositions(served, PROMPTS[0]);
    expect(maxAbsDiff(r.logProbs, reference.logProbs)).toBeLessThan(1e-5);
    await plain.release();
  });
});

describe("LoRA as a side branch", () => {
  it("equals the merged weights to 1e-5, prefill and decode", async () => {
    for (const adapter of [first, second]) {
      const merged = await CausalLmSession.open(buildOnnxModel(config, mergeLora(weights, adapter), { loraModules: [] }), { executionProvider: "cpu", threads: 1 });
      const inputs = served.prepareAdapter(adapter);
      const tokens = PROMPTS[0];
      const side = await allPositions(served, tokens, inputs);
      const reference = await allPositions(merged, tokens);
      // To 1e-5 of the log-probabilities' scale (|log p| reaches tens here, where float32 steps are a few 1e-6).
      const scale = Math.max(1, ...reference.positionLogProbs!.map(Math.abs));
      expect(maxAbsDiff(side.positionLogProbs!, reference.positionLogProbs!) / scale).toBeLessThan(1e-5);
      // The adapter must matter, or the comparison proves little.
      expect(maxAbsDiff(side.positionLogProbs!, (await allPositions(served, tokens)).positionLogProbs!)).toBeGreaterThan(0.05);
      const cache = served.newCache();
      const mergedCache = merged.newCache();
      await served.step([{ cache, tokens: tokens.slice(0, 3), adapter: inputs }]);
      await merged.step([{ cache: mergedCache, tokens: tokens.slice(0, 3) }]);
      for (const id of tokens.slice(3)) {
        const [a] = await served.step([{ cache, tokens: [id], adapter: inputs }]);
        const [b] = await merged.step([{ cache: mergedCache, tokens: [id] }]);
        expect(maxAbsDiff(a.logProbs, b.logProbs) / scale).toBeLessThan(1e-5);
      }
      await merged.release();
    }
  });

  it("one session serves the base model and two adapters in one batch, each row equal to its sequence alone", async () => {
    const adapters = [null, served.prepareAdapter(first), served.prepareAdapter(second)];
    const alone = await Promise.all(PROMPTS.map((tokens, b) => allPositions(served, tokens, adapters[b])));
    const caches = PROMPTS.map(() => served.newCache());
    const prefill = await served.step(PROMPTS.map((tokens, b) => ({ cache: caches[b], tokens, adapter: adapters[b], allPositions: true })));
    prefill.forEach((r, b) => expect(maxAbsDiff(r.positionLogProbs!, alone[b].positionLogProbs!)).toBeLessThan(1e-5));
    // A decode step of the mixed batch, against each sequence extended alone.
    const next = [5, 6, 7];
    const decode = await served.step(caches.map((cache, b) => ({ cache, tokens: [next[b]], adapter: adapters[b] })));
    for (let b = 0; b < 3; b++) {
      const reference = await allPositions(served, [...PROMPTS[b], next[b]], adapters[b]);
      expect(maxAbsDiff(decode[b].logProbs, reference.logProbs)).toBeLessThan(1e-5);
    }
    // The rows really differ by adapter: the same prompt under the three versions.
    const same = await served.step(adapters.map((adapter) => ({ cache: served.newCache(), tokens: PROMPTS[0], adapter })));
    expect(maxAbsDiff(same[0].logProbs, same[1].logProbs)).toBeGreaterThan(0.01);
    expect(maxAbsDiff(same[1].logProbs, same[2].logProbs)).toBeGreaterThan(0.01);
  });

  it("one adapter beside base rows, and an adapter on several rows of a mixed batch, give each row its own sequence alone", async () => {
    const one = served.prepareAdapter(first);
    const other = served.prepareAdapter(second);
    for (const adapters of [[one, null, one], [other, one, other]]) {
      const out = await served.step(PROMPTS.map((tokens, b) => ({ cache: served.newCache(), tokens, adapter: adapters[b], allPositions: true })));
      for (let b = 0; b < 3; b++) expect(maxAbsDiff(out[b].positionLogProbs!, (await allPositions(served, PROMPTS[b], adapters[b])).positionLogProbs!)).toBeLessThan(1e-5);
    }
  });

  it("refuses inputs prepared for another session, and adapters the graph cannot take", async () => {
    const plain = await CausalLmSession.open(buildOnnxModel(config, weights, { loraModules: [] }), { executionProvider: "cpu", threads: 1 });
    expect(() => plain.prepareAdapter(first)).toThrow(AdapterFitError);
    const other = await CausalLmSession.open(buildOnnxModel(config, weights), { executionProvider: "cpu", threads: 1 });
    await expect(served.step([{ cache: served.newCache(), tokens: [1], adapter: other.prepareAdapter(first) }])).rejects.toThrow(StepInputError);
    const qOnly = await CausalLmSession.open(buildOnnxModel(config, weights, { loraModules: ["q_proj"] }), { executionProvider: "cpu", threads: 1 });
    expect(() => qOnly.prepareAdapter(first)).toThrow(/no LoRA inputs for model\.layers\.0\.self_attn\.v_proj\.weight/);
    await Promise.all([plain.release(), other.release(), qOnly.release()]);
  });
});

describe("weights read by ONNX Runtime from the safetensors file", () => {
  it("serve the same log-probabilities as the same weights inline, with no weight bytes in the graph", async () => {
    const dir = mkdtempSync(join(tmpdir(), "lr-served-graph-"));
    writeModelDir(dir, { configJson, weights });
    const located = locateModelWeights(dir)!;
    const graph = buildServedGraph(located.config, fileBackedWeights(located.tensors), dir);
    expect(graph.externalDataDir).toBe(dir);
    const weightBytes = [...weights.values()].reduce((n, t) => n + t.data.byteLength, 0);
    // Against the same graph with its weights inline: nearly all the weights' bytes are gone (the rest names where they lie).
    expect(graph.bytes.byteLength).toBeLessThan(buildOnnxModel(config, weights).byteLength - 0.9 * weightBytes);
    const fromFile = await CausalLmSession.open(graph, { executionProvider: "cpu", threads: 1 });
    const a = await allPositions(fromFile, PROMPTS[0]);
    const b = await allPositions(served, PROMPTS[0]);
    expect(maxAbsDiff(a.positionLogProbs!, b.positionLogProbs!)).toBe(0);
    await fromFile.release();
  });

  it("follow a weights file that is a link out of the model directory, as in a Hugging Face cache snapshot", async () => {
    // snapshots/<rev>/model.safetensors -> ../../blobs/<sha>: ONNX Runtime refuses external data
    // that resolves outside the folder it reads from, so the graph must name the blob's folder.
    const cache = mkdtempSync(join(tmpdir(), "lr-served-graph-hub-"));
    const snapshot = join(cache, "snapshots", "rev");
    writeModelDir(snapshot, { configJson, weights });
    mkdirSync(join(cache, "blobs"));
    renameSync(join(snapshot, "model.safetensors"), join(cache, "blobs", "0123abcd"));
    symlinkSync(join("..", "..", "blobs", "0123abcd"), join(snapshot, "model.safetensors"));
    const located = locateModelWeights(snapshot)!;
    const graph = buildServedGraph(located.config, fileBackedWeights(located.tensors), snapshot);
    expect(graph.externalDataDir).toBe(join(cache, "blobs"));
    const fromBlob = await CausalLmSession.open(graph, { executionProvider: "cpu", threads: 1 });
    const a = await allPositions(fromBlob, PROMPTS[0]);
    const b = await allPositions(served, PROMPTS[0]);
    expect(maxAbsDiff(a.positionLogProbs!, b.positionLogProbs!)).toBe(0);
    await fromBlob.release();
  });

  it("a float16 safetensors file is not located (it is decoded instead)", () => {
    const dir = mkdtempSync(join(tmpdir(), "lr-served-graph-f16-"));
    writeModelDir(dir, { configJson, weights, dtype: "F16" });
    expect(locateModelWeights(dir)).toBeNull();
  });
});
