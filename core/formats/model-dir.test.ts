import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadModelDir, locateModelWeights, modelFingerprint, modelFingerprintInBackground, writeModelDir } from "./model-dir.ts";
import { writeSafetensors } from "./safetensors.ts";
import { parseModelConfig } from "#core/model/config.ts";
import { ModelFormatError, UnsupportedModelError } from "#core/model/errors.ts";
import { randomWeightSources } from "#core/model/init-model.ts";
import type { WeightMap } from "#core/model/weights.ts";
import { bfloat16BitsToFloat32, float32ToBfloat16Bits } from "#core/math/float16.ts";
import { errorOf } from "#test/helpers/error-of.ts";

const root = mkdtempSync(join(tmpdir(), "lr-model-dir-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;
const freshDir = (label: string) => join(root, `${label}-${counter++}`);

const LLAMA = {
  model_type: "llama", vocab_size: 300, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2,
  num_attention_heads: 4, num_key_value_heads: 2, tie_word_embeddings: false, rms_norm_eps: 1e-5,
};
const QWEN = {
  model_type: "qwen2", vocab_size: 320, hidden_size: 32, intermediate_size: 40, num_hidden_layers: 2,
  num_attention_heads: 4, num_key_value_heads: 1, tie_word_embeddings: true, rope_theta: 1e6,
};

function weightsFor(configJson: Record<string, unknown>, seed = 7): WeightMap {
  const config = parseModelConfig(configJson);
  return new Map(randomWeightSources(config, seed).map((s) => [s.name, { shape: s.shape, data: s.data() }]));
}

function expectSameWeights(a: WeightMap, b: WeightMap, round: (x: number) => number = (x) => x) {
  expect([...a.keys()]).toEqual([...b.keys()]);
  for (const [name, t] of a) {
    expect(b.get(name)!.shape, name).toEqual(t.shape);
    expect(Array.from(b.get(name)!.data), name).toEqual(Array.from(t.data, round));
  }
}

describe("model directory round trip", () => {
  it("writes and loads a llama model (GQA, untied) in one file", () => {
    const dir = freshDir("llama");
    const weights = weightsFor(LLAMA);
    writeModelDir(dir, { configJson: LLAMA, weights });
    const model = loadModelDir(dir);
    expect(model.dir).toBe(dir);
    expect(model.config.modelType).toBe("llama");
    expect(model.config.numKvHeads).toBe(2);
    expect(model.weights.has("lm_head.weight")).toBe(true);
    expectSameWeights(weights, model.weights);
  });

  it("reads sharded qwen2 weights (biases, tied) through the index", () => {
    const dir = freshDir("qwen-sharded");
    const weights = weightsFor(QWEN);
    const { files } = writeModelDir(dir, { configJson: QWEN, weights, shardBytes: 20_000 });
    expect(files.length).toBeGreaterThan(2);
    expect(readdirSync(dir)).toContain("model.safetensors.index.json");
    expect(readdirSync(dir)).not.toContain("model.safetensors");
    const index = JSON.parse(readFileSync(join(dir, "model.safetensors.index.json"), "utf8"));
    expect(new Set(Object.values(index.weight_map)).size).toBe(files.length);
    expect(index.metadata.total_size).toBe([...weights.values()].reduce((n, t) => n + t.data.length * 4, 0));
    const model = loadModelDir(dir);
    expect(model.weights.has("model.layers.1.self_attn.k_proj.bias")).toBe(true);
    expect(model.weights.has("lm_head.weight")).toBe(false);
    expectSameWeights(weights, model.weights);
  });

  it("stores BF16 and decodes it back to the rounded float32 values", () => {
    const dir = freshDir("bf16");
    const weights = weightsFor(LLAMA);
    writeModelDir(dir, { configJson: LLAMA, weights, dtype: "BF16" });
    expectSameWeights(weights, loadModelDir(dir).weights, (x) => bfloat16BitsToFloat32(float32ToBfloat16Bits(x)));
  });

  it("replaces a sharded layout by a single file without leaving stale shards", () => {
    const dir = freshDir("relayout");
    writeModelDir(dir, { configJson: QWEN, weights: weightsFor(QWEN), shardBytes: 20_000 });
    writeModelDir(dir, { configJson: QWEN, weights: weightsFor(QWEN, 8) });
    expect(readdirSync(dir).sort()).toEqual(["config.json", "model.safetensors"]);
    expectSameWeights(weightsFor(QWEN, 8), loadModelDir(dir).weights);
  });

  it("ignores rotary inv_freq buffers and an lm_head.weight that tied embeddings make redundant", () => {
    const dir = freshDir("extras");
    mkdirSync(dir);
    writeFileSync(join(dir, "config.json"), JSON.stringify(QWEN));
    const weights = weightsFor(QWEN);
    const extra = new Map(weights);
    extra.set("model.layers.0.self_attn.rotary_emb.inv_freq", { shape: [4], data: new Float32Array(4) });
    extra.set("lm_head.weight", { shape: [320, 32], data: new Float32Array(320 * 32) });
    writeSafetensors(join(dir, "model.safetensors"), extra);
    const model = loadModelDir(dir);
    expect(model.weights.size).toBe(weights.size);
    expect(model.weights.has("lm_head.weight")).toBe(false);
  });

  it("refuses to write weights that do not fit the config", () => {
    const weights = weightsFor(LLAMA);
    weights.delete("model.norm.weight");
    expect(() => writeModelDir(freshDir("bad-write"), { configJson: LLAMA, weights })).toThrow(/missing 1 tensor\(s\), e\.g\. "model\.norm\.weight"/);
  });
});

describe("model fingerprint", () => {
  it("is stable for equal contents and changes with one weight, the config or the layout", () => {
    const weights = weightsFor(LLAMA);
    const a = freshDir("fp");
    const b = freshDir("fp");
    writeModelDir(a, { configJson: LLAMA, weights });
    writeModelDir(b, { configJson: LLAMA, weights });
    expect(modelFingerprint(a)).toMatch(/^[0-9a-f]{64}$/);
    expect(modelFingerprint(a)).toBe(modelFingerprint(b));

    const changed = new Map(weights);
    const q = weights.get("model.layers.1.self_attn.q_proj.weight")!;
    const data = Float32Array.from(q.data);
    data[17] += 1e-3;
    changed.set("model.layers.1.self_attn.q_proj.weight", { shape: q.shape, data });
    writeModelDir(b, { configJson: LLAMA, weights: changed });
    expect(modelFingerprint(b)).not.toBe(modelFingerprint(a));

    writeModelDir(b, { configJson: { ...LLAMA, rms_norm_eps: 1e-6 }, weights });
    expect(modelFingerprint(b)).not.toBe(modelFingerprint(a));

    writeModelDir(b, { configJson: LLAMA, weights, shardBytes: 10_000 });
    expect(modelFingerprint(b)).not.toBe(modelFingerprint(a));
  });

  it("hashed on worker threads, is the same value, sharded or not", async () => {
    const weights = weightsFor(LLAMA);
    const single = freshDir("fp-bg");
    const sharded = freshDir("fp-bg");
    writeModelDir(single, { configJson: LLAMA, weights });
    writeModelDir(sharded, { configJson: LLAMA, weights, shardBytes: 10_000 });
    expect(await modelFingerprintInBackground(single)).toBe(modelFingerprint(single));
    expect(await modelFingerprintInBackground(sharded)).toBe(modelFingerprint(sharded));
  });
});

describe("locating float32 weights for a runtime that reads the file itself", () => {
  it("gives each tensor's file, offset and length, which hold exactly its values", () => {
    const weights = weightsFor(LLAMA);
    const dir = freshDir("locate");
    writeModelDir(dir, { configJson: LLAMA, weights, shardBytes: 10_000 });
    const located = locateModelWeights(dir)!;
    expect([...located.tensors.keys()]).toEqual([...weights.keys()]);
    for (const [name, t] of located.tensors) {
      const bytes = readFileSync(t.path).subarray(t.offset, t.offset + t.byteLength);
      expect(new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength))).toEqual(weights.get(name)!.data);
    }
  });
});

describe("model directory errors", () => {
  /** A directory with this config.json and these tensors written straight to model.safetensors. */
  function rawDir(config: unknown, weights?: WeightMap): string {
    const dir = freshDir("raw");
    mkdirSync(dir);
    if (config !== undefined) writeFileSync(join(dir, "config.json"), typeof config === "string" ? config : JSON.stringify(config));
    if (weights) writeSafetensors(join(dir, "model.safetensors"), weights);
    return dir;
  }

  it("names a directory that does not exist", () => {
    const dir = join(root, "nowhere");
    expect(errorOf(() => loadModelDir(dir)).message).toBe(`${dir}: model directory does not exist`);
  });

  it("names a missing config.json", () => {
    const dir = rawDir(undefined, weightsFor(LLAMA));
    const err = errorOf(() => loadModelDir(dir)) as ModelFormatError;
    expect(err).toBeInstanceOf(ModelFormatError);
    expect(err.file).toBe(join(dir, "config.json"));
    expect(err.problem).toMatch(/missing/);
  });

  it("names a malformed config.json", () => {
    const dir = rawDir('{"model_type": "llama",');
    const err = errorOf(() => loadModelDir(dir)) as ModelFormatError;
    expect(err.file).toBe(join(dir, "config.json"));
    expect(err.problem).toMatch(/malformed JSON/);
  });

  it("refuses an unsupported model_type", () => {
    const dir = rawDir({ ...LLAMA, model_type: "gpt2" });
    const err = errorOf(() => loadModelDir(dir));
    expect(err).toBeInstanceOf(UnsupportedModelError);
    expect(err.message).toMatch(/config\.json: model_type "gpt2" is not supported/);
  });

  it("names the file, tensor, expected and actual shape of a wrong tensor", () => {
    const weights = weightsFor(LLAMA);
    weights.set("model.layers.1.self_attn.k_proj.weight", { shape: [32, 32], data: new Float32Array(32 * 32) });
    const dir = rawDir(LLAMA, weights);
    const err = errorOf(() => loadModelDir(dir)) as ModelFormatError;
    expect(err.file).toBe(join(dir, "model.safetensors"));
    expect(err.problem).toBe(`tensor "model.layers.1.self_attn.k_proj.weight" has shape [32, 32] but ${join(dir, "config.json")} implies [16, 32]`);
  });

  it("names a missing tensor", () => {
    const weights = weightsFor(LLAMA);
    weights.delete("model.layers.0.mlp.down_proj.weight");
    const dir = rawDir(LLAMA, weights);
    expect(errorOf(() => loadModelDir(dir)).message).toMatch(/model\.safetensors: missing 1 tensor\(s\) the config requires: "model\.layers\.0\.mlp\.down_proj\.weight" \[32, 48\]/);
  });

  it("refuses tensors the config does not explain (qwen2 biases under a llama config)", () => {
    const qwenShaped = weightsFor({ ...QWEN, vocab_size: 300, intermediate_size: 48, num_key_value_heads: 2, tie_word_embeddings: false });
    const dir = rawDir(LLAMA, qwenShaped);
    expect(errorOf(() => loadModelDir(dir)).message).toMatch(/unexpected tensor "model\.layers\.0\.self_attn\.q_proj\.bias" \[32\].*check attention_bias/);
  });

  it("says when there are no safetensors weights", () => {
    const dir = rawDir(LLAMA);
    writeFileSync(join(dir, "pytorch_model.bin"), "");
    expect(errorOf(() => loadModelDir(dir)).message).toMatch(/no model\.safetensors or model\.safetensors\.index\.json.*pytorch_model\.bin is not supported/);
  });

  it("names a shard the index lists but the directory lacks", () => {
    const dir = freshDir("lost-shard");
    const { files } = writeModelDir(dir, { configJson: QWEN, weights: weightsFor(QWEN), shardBytes: 20_000 });
    rmSync(files[1]);
    const err = errorOf(() => loadModelDir(dir)) as ModelFormatError;
    expect(err.file).toBe(join(dir, "model.safetensors.index.json"));
    expect(err.problem).toMatch(/shard model-00002-of-\d{5}\.safetensors \(holding ".*"\) does not exist/);
  });

  it("refuses an index whose shard names leave the directory", () => {
    const dir = rawDir(LLAMA);
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: { "model.norm.weight": "../elsewhere.safetensors" } }));
    expect(errorOf(() => loadModelDir(dir)).message).toMatch(/must be a shard file name in the same directory/);
  });

  it("reports a truncated weights file", () => {
    const dir = rawDir(LLAMA, weightsFor(LLAMA));
    const path = join(dir, "model.safetensors");
    writeFileSync(path, readFileSync(path).subarray(0, 100));
    expect(errorOf(() => loadModelDir(dir)).message).toMatch(/model\.safetensors: truncated safetensors file: header length \d+ runs past the end/);
  });
});
