import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelFormatError } from "#core/model/errors.ts";
import { buildOnnxModel } from "./export.ts";
import { ExecutionProviderError, cudaProviderInstalled } from "./execution-provider.ts";
import { CausalLmSession, StepInputError } from "./session.ts";
import { randomWeights, tinyConfig } from "./testing/random-model.ts";
import { referenceLogits } from "#core/model/testing/reference-forward.ts";
import { flat, logSoftmaxRows, maxAbsDiff, rows } from "./testing/compare.ts";

const config = tinyConfig("qwen2", { head_dim: 12, num_attention_heads: 4, num_key_value_heads: 2 });
const weights = randomWeights(config, 2024);
const V = config.vocabSize;
let session: CausalLmSession;

beforeAll(async () => {
  session = await CausalLmSession.open(buildOnnxModel(config, weights), { executionProvider: "cpu", threads: 1 });
});
afterAll(() => session.release());

/** One sequence alone in one step, from an empty cache. */
async function alone(tokens: number[]) {
  const [r] = await session.step([{ cache: session.newCache(), tokens, allPositions: true }]);
  return r;
}

/** The float64 reference forward's log-probabilities at every position of `tokens`. */
const referenceLogProbs = (tokens: number[]) => logSoftmaxRows(flat(referenceLogits(config, weights, tokens)), V);

describe("KV cache", () => {
  it("token-by-token decoding equals one full forward", async () => {
    const tokens = [3, 14, 15, 9, 26, 53, 58, 9, 7, 32];
    const full = await alone(tokens);
    expect(maxAbsDiff(full.positionLogProbs!, referenceLogProbs(tokens))).toBeLessThan(1e-4);

    const cache = session.newCache();
    const [prefill] = await session.step([{ cache, tokens: tokens.slice(0, 3), allPositions: true }]);
    expect(maxAbsDiff(prefill.positionLogProbs!, rows(full.positionLogProbs!, V, 0, 3))).toBeLessThan(1e-4);
    for (let t = 3; t < tokens.length; t++) {
      const [r] = await session.step([{ cache, tokens: [tokens[t]], allPositions: true }]);
      expect(maxAbsDiff(r.positionLogProbs!, rows(full.positionLogProbs!, V, t, t + 1))).toBeLessThan(1e-4);
      expect(cache.length).toBe(t + 1);
    }
    // Growing past the initial capacity (16) keeps the cache intact.
    const more = [1, 2, 3, 4, 5, 6, 7, 8, 9];
    const longer = await alone([...tokens, ...more]);
    for (const [k, id] of more.entries()) {
      const [r] = await session.step([{ cache, tokens: [id] }]);
      const t = tokens.length + k;
      expect(maxAbsDiff(r.logProbs, rows(longer.positionLogProbs!, V, t, t + 1))).toBeLessThan(1e-4);
    }
    expect(cache.length).toBe(tokens.length + more.length);
  });
});

async function lastLogProbs(tokens: number[]) {
  return (await alone(tokens)).logProbs;
}

describe("left-padded batches", () => {
  const prompts = [[7, 8], [1, 2, 3, 4, 5], [60, 61, 62, 63, 0, 1, 2]];

  it("a prefill batch of different lengths equals each sequence alone", async () => {
    const caches = prompts.map(() => session.newCache());
    const batch = await session.step(prompts.map((tokens, b) => ({ cache: caches[b], tokens, allPositions: true })));
    for (const [b, tokens] of prompts.entries()) {
      const single = await alone(tokens);
      expect(batch[b].positionLogProbs!.length).toBe(tokens.length * V);
      expect(maxAbsDiff(batch[b].positionLogProbs!, single.positionLogProbs!)).toBeLessThan(1e-4);
      expect(maxAbsDiff(batch[b].logProbs, single.logProbs)).toBeLessThan(1e-4);
      expect(caches[b].length).toBe(tokens.length);
    }

    // Decode the three together: the caches differ in length, so the past is padded too.
    const next = [[11], [12], [13]];
    for (let step = 0; step < 3; step++) {
      const results = await session.step(caches.map((cache, b) => ({ cache, tokens: next[b].slice(-1) })));
      for (const [b, r] of results.entries()) {
        const history = [...prompts[b], ...next[b]];
        expect(maxAbsDiff(r.logProbs, await lastLogProbs(history))).toBeLessThan(1e-4);
        next[b].push(20 + b + step);
      }
    }
  });

  it("a padded batch matches the float64 reference for every sequence", async () => {
    const batch = await session.step(prompts.map((tokens) => ({ cache: session.newCache(), tokens, allPositions: true })));
    for (const [b, tokens] of prompts.entries()) {
      expect(maxAbsDiff(batch[b].positionLogProbs!, referenceLogProbs(tokens))).toBeLessThan(1e-4);
    }
  });

  it("mixes a prefill and a decode in one step", async () => {
    const a = session.newCache();
    const aTokens = [4, 8, 15, 16];
    await session.step([{ cache: a, tokens: aTokens }]);
    const b = session.newCache();
    const bTokens = [23, 42, 5, 6, 7];
    const [ra, rb] = await session.step([
      { cache: a, tokens: [33], allPositions: true },
      { cache: b, tokens: bTokens, allPositions: true },
    ]);
    expect(maxAbsDiff(ra.positionLogProbs!, rows(referenceLogProbs([...aTokens, 33]), V, 4, 5))).toBeLessThan(1e-4);
    expect(maxAbsDiff(rb.positionLogProbs!, referenceLogProbs(bTokens))).toBeLessThan(1e-4);
    expect([a.length, b.length]).toEqual([5, 5]);
    // And both continue correctly from their caches.
    const [ra2, rb2] = await session.step([{ cache: a, tokens: [1] }, { cache: b, tokens: [2, 3] }]);
    expect(maxAbsDiff(ra2.logProbs, await lastLogProbs([...aTokens, 33, 1]))).toBeLessThan(1e-4);
    expect(maxAbsDiff(rb2.logProbs, await lastLogProbs([...bTokens, 2, 3]))).toBeLessThan(1e-4);
  });
});

describe("bad step requests", () => {
  it("rejects empty, out-of-vocabulary and duplicated input with a typed error", async () => {
    const cache = session.newCache();
    await expect(session.step([{ cache, tokens: [] }])).rejects.toThrow(/requests\[0\]\.tokens: is empty/);
    await expect(session.step([{ cache, tokens: [1, V] }])).rejects.toThrow(StepInputError);
    await expect(session.step([{ cache, tokens: [1, -1] }])).rejects.toThrow(/requests\[0\]\.tokens\[1\]: token id -1/);
    await expect(session.step([{ cache, tokens: [1] }, { cache, tokens: [2] }])).rejects.toThrow(/appears twice/);
    expect(cache.length).toBe(0);
  });

  it("rejects a cache of another model", async () => {
    const otherConfig = tinyConfig("llama", { num_hidden_layers: 1 });
    const other = await CausalLmSession.open(buildOnnxModel(otherConfig, randomWeights(otherConfig, 1)), { executionProvider: "cpu" });
    await expect(session.step([{ cache: other.newCache(), tokens: [1] }])).rejects.toThrow(/belongs to another model/);
    await other.release();
  });
});

describe("opening a session", () => {
  const bytes = () => buildOnnxModel(config, weights);

  it("says which execution provider runs", async () => {
    const lines: string[] = [];
    const cpu = await CausalLmSession.open(bytes(), { executionProvider: "cpu", log: (m) => lines.push(m) });
    expect(cpu.provider).toBe("cpu");
    expect(lines).toEqual([expect.stringMatching(/CPU execution provider/)]);
    await cpu.release();
  });

  it.skipIf(cudaProviderInstalled())("auto falls back to CPU and says why; cuda fails clearly", async () => {
    const lines: string[] = [];
    const auto = await CausalLmSession.open(bytes(), { executionProvider: "auto", log: (m) => lines.push(m) });
    expect(auto.provider).toBe("cpu");
    expect(lines.join("\n")).toMatch(/CUDA provider not installed; CPU execution provider/);
    await auto.release();
    await expect(CausalLmSession.open(bytes(), { executionProvider: "cuda" })).rejects.toThrow(ExecutionProviderError);
  });

  it("rejects a bad provider name and thread count", async () => {
    await expect(CausalLmSession.open(bytes(), { executionProvider: "tpu" as never })).rejects.toThrow(/must be one of cpu, cuda, auto/);
    await expect(CausalLmSession.open(bytes(), { executionProvider: "cpu", threads: 0 })).rejects.toThrow(/threads must be a positive integer/);
  });

  it("names the file when a model is missing or is not ONNX", async () => {
    const dir = mkdtempSync(join(tmpdir(), "lr-session-"));
    const missing = join(dir, "nope.onnx");
    await expect(CausalLmSession.open(missing)).rejects.toThrow(ModelFormatError);
    await expect(CausalLmSession.open(missing)).rejects.toThrow(/nope\.onnx: no such ONNX model file/);
    const garbage = join(dir, "garbage.onnx");
    writeFileSync(garbage, "not a protobuf at all");
    await expect(CausalLmSession.open(garbage, { executionProvider: "cpu" })).rejects.toThrow(/garbage\.onnx: ONNX Runtime cannot load the model/);
  });
});
