// An independent float64 forward pass of a llama / qwen2 causal LM in plain loops, one token
// and one head at a time, with none of the TensorFlow.js model's code: the oracle its logits
// are checked against. Follows the Hugging Face modeling code: RoPE pairs element i with
// element i + d/2, query head h reads KV head floor(h / group), padding is skipped and
// positions count real tokens only.
import type { ModelConfig } from "../../../../../core/model/config.ts";
import type { WeightMap } from "../../../../../core/model/weights.ts";

type Vec = Float64Array;

/** logits[row][position] over the vocabulary, or null at padded positions. */
export function referenceLogits(config: ModelConfig, weights: WeightMap, ids: number[][], mask?: number[][]): (Vec | null)[][] {
  return ids.map((row, b) => {
    const real = row.map((_, t) => (mask ? mask[b][t] === 1 : true));
    const tokens = row.filter((_, t) => real[t]);
    const logits = referenceSequence(config, weights, tokens);
    let next = 0;
    return real.map((isReal) => (isReal ? logits[next++] : null));
  });
}

/** Logits at every position of one unpadded sequence. */
function referenceSequence(cfg: ModelConfig, w: WeightMap, tokens: number[]): Vec[] {
  const get = (name: string) => {
    const t = w.get(name);
    if (!t) throw new Error(`reference: missing ${name}`);
    return t;
  };
  const embed = get("model.embed_tokens.weight");
  let x: Vec[] = tokens.map((id) => Float64Array.from(embed.data.subarray(id * cfg.hiddenSize, (id + 1) * cfg.hiddenSize)));
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    const p = `model.layers.${layer}`;
    const attnIn = x.map((v) => rms(v, get(`${p}.input_layernorm.weight`).data, cfg.rmsNormEps));
    const attnOut = selfAttention(cfg, get, p, attnIn);
    x = x.map((v, t) => add(v, attnOut[t]));
    const mlpIn = x.map((v) => rms(v, get(`${p}.post_attention_layernorm.weight`).data, cfg.rmsNormEps));
    x = x.map((v, t) => {
      const gate = affine(get(`${p}.mlp.gate_proj.weight`).data, mlpIn[t]);
      const up = affine(get(`${p}.mlp.up_proj.weight`).data, mlpIn[t]);
      const act = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]);
      return add(v, affine(get(`${p}.mlp.down_proj.weight`).data, act));
    });
  }
  const head = get(cfg.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight").data;
  return x.map((v) => affine(head, rms(v, get("model.norm.weight").data, cfg.rmsNormEps)));
}

function selfAttention(cfg: ModelConfig, get: (n: string) => { data: Float32Array }, p: string, h: Vec[]): Vec[] {
  const d = cfg.headDim;
  const bias = (m: string) => (cfg.attentionBias ? get(`${p}.self_attn.${m}.bias`).data : undefined);
  const q = h.map((v, pos) => rotate(affine(get(`${p}.self_attn.q_proj.weight`).data, v, bias("q_proj")), pos, d, cfg.ropeTheta));
  const k = h.map((v, pos) => rotate(affine(get(`${p}.self_attn.k_proj.weight`).data, v, bias("k_proj")), pos, d, cfg.ropeTheta));
  const val = h.map((v) => affine(get(`${p}.self_attn.v_proj.weight`).data, v, bias("v_proj")));
  const group = cfg.numHeads / cfg.numKvHeads;
  return h.map((_, t) => {
    const out = new Float64Array(cfg.numHeads * d);
    for (let head = 0; head < cfg.numHeads; head++) {
      const kv = Math.floor(head / group);
      const scores: number[] = [];
      for (let s = 0; s <= t; s++) {
        let dot = 0;
        for (let i = 0; i < d; i++) dot += q[t][head * d + i] * k[s][kv * d + i];
        scores.push(dot / Math.sqrt(d));
      }
      const max = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - max));
      const z = e.reduce((a, b) => a + b, 0);
      for (let s = 0; s <= t; s++) {
        for (let i = 0; i < d; i++) out[head * d + i] += (e[s] / z) * val[s][kv * d + i];
      }
    }
    return affine(get(`${p}.self_attn.o_proj.weight`).data, out);
  });
}

/** Rotates each head's pairs (i, i + d/2) by position * theta^(-2i/d). */
function rotate(v: Vec, pos: number, d: number, theta: number): Vec {
  const out = new Float64Array(v.length);
  for (let base = 0; base < v.length; base += d) {
    for (let i = 0; i < d / 2; i++) {
      const angle = pos * Math.pow(theta, (-2 * i) / d);
      const re = v[base + i];
      const im = v[base + i + d / 2];
      out[base + i] = re * Math.cos(angle) - im * Math.sin(angle);
      out[base + i + d / 2] = im * Math.cos(angle) + re * Math.sin(angle);
    }
  }
  return out;
}

function rms(v: Vec, weight: Float32Array, eps: number): Vec {
  let ss = 0;
  for (const a of v) ss += a * a;
  const inv = 1 / Math.sqrt(ss / v.length + eps);
  return v.map((a, i) => a * inv * weight[i]);
}

/** W v (+ b) with W [out, in] row-major. */
function affine(w: Float32Array, v: Vec, b?: Float32Array): Vec {
  const out = new Float64Array(w.length / v.length);
  for (let o = 0; o < out.length; o++) {
    let acc = b ? b[o] : 0;
    for (let i = 0; i < v.length; i++) acc += w[o * v.length + i] * v[i];
    out[o] = acc;
  }
  return out;
}

function add(a: Vec, b: Vec): Vec {
  return a.map((x, i) => x + b[i]);
}
