// Converts a legacy llama2.c checkpoint (+ its tok*.bin vocabulary) into a Hugging Face
// model directory, so a real pretrained model can exercise the same load/export/decode path
// as a user's model. Used only by tests; the format facts are in ../shared/fixtures/README.md.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { WeightMap } from "#core/model/weights.ts";
import { writeModelDir } from "#core/formats/model-dir.ts";

interface Llama2cHeader {
  dim: number;
  hiddenDim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  seqLen: number;
  sharedClassifier: boolean;
}

function readHeader(buf: Buffer): Llama2cHeader {
  const v = (i: number) => buf.readInt32LE(i * 4);
  return {
    dim: v(0),
    hiddenDim: v(1),
    layers: v(2),
    heads: v(3),
    kvHeads: v(4),
    vocab: Math.abs(v(5)),
    seqLen: v(6),
    sharedClassifier: v(5) > 0,
  };
}

/**
 * llama2.c rotates adjacent pairs (2i, 2i+1); Hugging Face rotates halves (i, i + d/2).
 * Reordering each head's output rows to evens-then-odds makes the two conventions agree.
 */
function permuteForRotateHalf(data: Float32Array, heads: number, headDim: number, inFeatures: number): Float32Array {
  const out = new Float32Array(data.length);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < headDim; j++) {
      const source = j < half ? 2 * j : 2 * (j - half) + 1;
      const from = (h * headDim + source) * inFeatures;
      out.set(data.subarray(from, from + inFeatures), (h * headDim + j) * inFeatures);
    }
  }
  return out;
}

/** Writes `<outDir>` as a llama-family HF directory (config, safetensors, tokenizer). */
export function convertLlama2c(checkpointPath: string, tokenizerPath: string, outDir: string): void {
  const buf = readFileSync(checkpointPath);
  const h = readHeader(buf);
  const headDim = h.dim / h.heads;
  const floats = new Float32Array(buf.buffer.slice(buf.byteOffset + 28, buf.byteOffset + buf.byteLength));
  let offset = 0;
  const take = (count: number) => floats.slice(offset, (offset += count));
  // Each stacked tensor holds all layers back to back, in the checkpoint's order.
  const perLayer = (count: number) => {
    const all = take(count * h.layers);
    return Array.from({ length: h.layers }, (_, i) => all.subarray(i * count, (i + 1) * count));
  };
  const qOut = h.heads * headDim;
  const kvOut = h.kvHeads * headDim;
  const embed = take(h.vocab * h.dim);
  const attnNorm = perLayer(h.dim);
  const wq = perLayer(qOut * h.dim);
  const wk = perLayer(kvOut * h.dim);
  const wv = perLayer(kvOut * h.dim);
  const wo = perLayer(h.dim * qOut);
  const ffnNorm = perLayer(h.dim);
  const w1 = perLayer(h.hiddenDim * h.dim);
  const w2 = perLayer(h.dim * h.hiddenDim);
  const w3 = perLayer(h.hiddenDim * h.dim);
  const finalNorm = take(h.dim);

  const weights: WeightMap = new Map();
  const put = (name: string, shape: number[], data: Float32Array) => weights.set(name, { shape, data: Float32Array.from(data) });
  put("model.embed_tokens.weight", [h.vocab, h.dim], embed);
  for (let i = 0; i < h.layers; i++) {
    const p = `model.layers.${i}`;
    put(`${p}.input_layernorm.weight`, [h.dim], attnNorm[i]);
    put(`${p}.self_attn.q_proj.weight`, [qOut, h.dim], permuteForRotateHalf(wq[i], h.heads, headDim, h.dim));
    put(`${p}.self_attn.k_proj.weight`, [kvOut, h.dim], permuteForRotateHalf(wk[i], h.kvHeads, headDim, h.dim));
    put(`${p}.self_attn.v_proj.weight`, [kvOut, h.dim], wv[i]);
    put(`${p}.self_attn.o_proj.weight`, [h.dim, qOut], wo[i]);
    put(`${p}.post_attention_layernorm.weight`, [h.dim], ffnNorm[i]);
    put(`${p}.mlp.gate_proj.weight`, [h.hiddenDim, h.dim], w1[i]);
    put(`${p}.mlp.down_proj.weight`, [h.dim, h.hiddenDim], w2[i]);
    put(`${p}.mlp.up_proj.weight`, [h.hiddenDim, h.dim], w3[i]);
  }
  put("model.norm.weight", [h.dim], finalNorm);
  if (!h.sharedClassifier) throw new Error("llama2c checkpoints with a separate classifier are not needed by the tests");

  const configJson = {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: h.dim,
    intermediate_size: h.hiddenDim,
    num_hidden_layers: h.layers,
    num_attention_heads: h.heads,
    num_key_value_heads: h.kvHeads,
    vocab_size: h.vocab,
    max_position_embeddings: h.seqLen,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: true,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: "float32",
  };
  writeModelDir(outDir, { configJson, weights });
  writeTokenizer(tokenizerPath, outDir);
}

/**
 * tok*.bin stores sentencepiece pieces with spaces already substituted for "▁". Decoding
 * only needs id -> piece, so a Unigram tokenizer.json with the stored scores and the
 * sentencepiece-style decoder chain reproduces the checkpoint's text exactly.
 */
function writeTokenizer(tokenizerPath: string, outDir: string): void {
  const buf = readFileSync(tokenizerPath);
  let offset = 4; // max piece length, not needed
  const vocab: [string, number][] = [];
  while (offset < buf.length) {
    const score = buf.readFloatLE(offset);
    const length = buf.readInt32LE(offset + 4);
    const piece = buf.subarray(offset + 8, offset + 8 + length).toString("utf8");
    offset += 8 + length;
    vocab.push([piece.replaceAll(" ", "▁"), score]);
  }
  const special = new Map([
    [0, "<unk>"],
    [1, "<s>"],
    [2, "</s>"],
  ]);
  for (const [id, content] of special) vocab[id] = [content, 0];
  const tokenizer = {
    version: "1.0",
    added_tokens: [...special].map(([id, content]) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "▁" }, { type: "Replace", pattern: { String: " " }, content: "▁" }] },
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "▁" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: { type: "Unigram", unk_id: 0, vocab, byte_fallback: true },
  };
  writeFileSync(join(outDir, "tokenizer.json"), JSON.stringify(tokenizer));
  writeFileSync(
    join(outDir, "tokenizer_config.json"),
    JSON.stringify({ bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>", add_bos_token: true, add_eos_token: false }),
  );
}
