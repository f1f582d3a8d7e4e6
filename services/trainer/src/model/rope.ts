// Rotary position embeddings in the Hugging Face layout: the two halves of each head vector
// are the (real, imaginary) parts, i.e. q' = q cos + rotate_half(q) sin with
// rotate_half([x1, x2]) = [-x2, x1] and frequency theta^(-2i/d) repeated over both halves.
// The ONNX exporter's RotaryEmbedding (non-interleaved) uses the same convention.
import * as tf from "@tensorflow/tfjs";

export interface RopeTables {
  /** [batch, 1, seq, headDim], broadcast over heads. */
  cos: tf.Tensor4D;
  sin: tf.Tensor4D;
}

/** cos/sin of position * frequency for each token, computed in float64 then rounded once. */
export function ropeTables(positions: Int32Array, batch: number, seq: number, headDim: number, theta: number): RopeTables {
  const { cos, sin } = ropeTableData(positions, batch * seq, headDim, theta);
  const shape: [number, number, number, number] = [batch, 1, seq, headDim];
  return { cos: tf.tensor4d(cos, shape), sin: tf.tensor4d(sin, shape) };
}

/** The tables as plain [tokens, headDim] arrays (the ONNX Runtime engine feeds them to its graphs). */
export function ropeTableData(positions: Int32Array, tokens: number, headDim: number, theta: number): { cos: Float32Array; sin: Float32Array } {
  const half = headDim / 2;
  const cos = new Float32Array(tokens * headDim);
  const sin = new Float32Array(tokens * headDim);
  for (let i = 0; i < tokens; i++) {
    for (let k = 0; k < half; k++) {
      const angle = positions[i] * theta ** (-(2 * k) / headDim);
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      cos[i * headDim + k] = cos[i * headDim + k + half] = c;
      sin[i * headDim + k] = sin[i * headDim + k + half] = s;
    }
  }
  return { cos, sin };
}

/** x: [batch, heads, seq, headDim]. */
export function applyRope(x: tf.Tensor4D, { cos, sin }: RopeTables): tf.Tensor4D {
  const [x1, x2] = tf.split(x, 2, -1);
  const rotated = tf.concat([tf.neg(x2), x1], -1);
  return tf.add(tf.mul(x, cos), tf.mul(rotated, sin));
}
