// An independent, deliberately plain float64 forward pass of a llama/qwen2 causal LM, the
// oracle both runtimes (the ONNX graph and the TensorFlow.js model) are checked against:
// naive loops, no cache, the Hugging Face equations written out (RMSNorm, rotate_half RoPE,
// grouped-query attention, SwiGLU).
// A LoRA adapter is applied unmerged, y = W x + (alpha / r) B (A x), as PEFT runs it.
import type { LoraAdapter } from "#core/model/lora.ts";
import type { ModelConfig } from "#core/model/config.ts";
import type { WeightMap } from "#core/model/weights.ts";
import { lmHeadName } from "#core/model/weights.ts";

type Vec = Float64Array;

function w(weights: WeightMap, name: string): Float32Array {
  const t = weights.get(name);
  if (!t) throw new Error(`reference forward: missing ${name}`);
  return t.data;
}

/** y = W x (+ b) with W stored [out, in]. */
function matVec(x: Vec, weight: Float32Array, out: number, bias?: Float32Array): Vec {
  const inF = x.length;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = bias ? bias[o] : 0;
    for (let i = 0; i < inF; i++) s += weight[o * inF + i] * x[i];
    y[o] = s;
  }
  return y;
}

function rmsNorm(x: Vec, scale: Float32Array, eps: number): Vec {
  let ms = 0;
  for (const v of x) ms += v * v;
  const inv = 1 / Math.sqrt(ms / x.length + eps);
  return x.map((v, i) => v * inv * scale[i]);
}

/** rotate_half convention: pairs (i, i + d/2) of each head rotate by position * theta^(-2i/d). */
function rope(x: Vec, heads: number, d: number, position: number, theta: number): Vec {
  const y = new Float64Array(x.length);
  const half = d / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      const angle = position / theta ** ((2 * i) / d);
      const a = x[h * d + i];
      const b = x[h * d + i + half];
      y[h * d + i] = a * Math.cos(angle) - b * Math.sin(angle);
      y[h * d + i + half] = b * Math.cos(angle) + a * Math.sin(angle);
    }
  }
  return y;
}

const silu = (v: number) => v / (1 + Math.exp(-v));

/** Logits [position][vocab] for one unpadded sequence starting at position 0. */
export function referenceLogits(config: ModelConfig, weights: WeightMap, tokens: number[], adapter?: LoraAdapter): Float64Array[] {
  const scale = adapter ? adapter.settings.alpha / adapter.settings.rank : 0;
  const linear = (x: Vec, name: string, out: number, bias?: Float32Array): Vec => {
    const y = matVec(x, w(weights, name), out, bias);
    const pair = adapter?.pairs.get(name);
    if (pair) {
      const low = matVec(x, pair.a.data, adapter!.settings.rank);
      const up = matVec(low, pair.b.data, out);
      for (let o = 0; o < out; o++) y[o] += scale * up[o];
    }
    return y;
  };
  const { hiddenSize: hidden, numHeads, numKvHeads, headDim: d, intermediateSize: inter, rmsNormEps: eps } = config;
  const group = numHeads / numKvHeads;
  const embed = w(weights, "model.embed_tokens.weight");
  let xs: Vec[] = tokens.map((t) => Float64Array.from(embed.subarray(t * hidden, (t + 1) * hidden)));

  for (let layer = 0; layer < config.numLayers; layer++) {
    const p = `model.layers.${layer}`;
    const bias = (m: string) => (config.attentionBias ? w(weights, `${p}.self_attn.${m}.bias`) : undefined);
    const normed = xs.map((x) => rmsNorm(x, w(weights, `${p}.input_layernorm.weight`), eps));
    const qs = normed.map((x, pos) => rope(linear(x, `${p}.self_attn.q_proj.weight`, numHeads * d, bias("q_proj")), numHeads, d, pos, config.ropeTheta));
    const ks = normed.map((x, pos) => rope(linear(x, `${p}.self_attn.k_proj.weight`, numKvHeads * d, bias("k_proj")), numKvHeads, d, pos, config.ropeTheta));
    const vs = normed.map((x) => linear(x, `${p}.self_attn.v_proj.weight`, numKvHeads * d, bias("v_proj")));

    xs = xs.map((x, t) => {
      const attended = new Float64Array(numHeads * d);
      for (let h = 0; h < numHeads; h++) {
        const kv = Math.floor(h / group);
        const scores = [];
        for (let s = 0; s <= t; s++) {
          let dot = 0;
          for (let i = 0; i < d; i++) dot += qs[t][h * d + i] * ks[s][kv * d + i];
          scores.push(dot / Math.sqrt(d));
        }
        const max = Math.max(...scores);
        const exps = scores.map((v) => Math.exp(v - max));
        const sum = exps.reduce((a, b) => a + b, 0);
        for (let s = 0; s <= t; s++) for (let i = 0; i < d; i++) attended[h * d + i] += (exps[s] / sum) * vs[s][kv * d + i];
      }
      const o = linear(attended, `${p}.self_attn.o_proj.weight`, hidden);
      return x.map((v, i) => v + o[i]);
    });

    xs = xs.map((x) => {
      const n = rmsNorm(x, w(weights, `${p}.post_attention_layernorm.weight`), eps);
      const gate = linear(n, `${p}.mlp.gate_proj.weight`, inter);
      const up = linear(n, `${p}.mlp.up_proj.weight`, inter);
      const down = linear(gate.map((g, i) => silu(g) * up[i]), `${p}.mlp.down_proj.weight`, hidden);
      return x.map((v, i) => v + down[i]);
    });
  }
  return xs.map((x) => matVec(rmsNorm(x, w(weights, "model.norm.weight"), eps), w(weights, lmHeadName(config)), config.vocabSize));
}

/**
 * logits[row][position] for a padded batch, or null at padded positions: each row's real
 * tokens (mask 1) are run alone, so positions count real tokens only.
 */
export function referenceBatchLogits(config: ModelConfig, weights: WeightMap, ids: number[][], mask?: number[][]): (Vec | null)[][] {
  return ids.map((row, b) => {
    const real = row.map((_, t) => (mask ? mask[b][t] === 1 : true));
    const logits = referenceLogits(config, weights, row.filter((_, t) => real[t]));
    let next = 0;
    return real.map((isReal) => (isReal ? logits[next++] : null));
  });
}
