// The fine-tuning loss of METHOD.md stage 2: for each sample (a selected step), the KL
// divergence from its soft label v_C to the model's full-vocabulary next-token distribution,
//   KL(v || q) = sum_a v(a) (log v(a) - log q(a)),   q = softmax(logits),
// summed over samples and divided by their number: PyTorch's
// kl_div(log_softmax(logits), v, reduction="batchmean"). A one-hot label makes it the
// cross-entropy -log q(y), so SFT and pretraining use the same function.
import * as tf from "@tensorflow/tfjs";
import { gatherRows } from "#trainer/model/gather-rows.ts";
import type { SoftLabel } from "./trajectory.ts";

/**
 * Per-sample KL(labels[i] || softmax(logits[i])), [n]. Only log q at each label's ids is
 * read (a flat gather, padded with zero weights to the largest label), so memory stays at
 * the logits' size however wide the vocabulary. sum v log v is a constant, computed in
 * float64 on the host with 0 log 0 = 0 (as torch's xlogy).
 */
export function softLabelKl(logits: tf.Tensor2D, labels: readonly SoftLabel[]): tf.Tensor1D {
  const [rows, vocab] = logits.shape;
  if (labels.length !== rows) throw new RangeError(`softLabelKl: ${labels.length} labels for ${rows} rows of logits`);
  const width = Math.max(1, ...labels.map((l) => l.ids.length));
  const flat = new Int32Array(rows * width);
  const weights = new Float32Array(rows * width);
  const negEntropy = new Float32Array(rows);
  labels.forEach(({ ids, weights: w }, i) => {
    let sum = 0;
    for (let j = 0; j < width; j++) {
      // A padding slot points at a real entry of this row with weight 0: no value, no gradient.
      flat[i * width + j] = i * vocab + (j < ids.length ? ids[j] : ids[0]);
      if (j < ids.length) {
        weights[i * width + j] = w[j];
        if (w[j] > 0) sum += w[j] * Math.log(w[j]);
      }
    }
    negEntropy[i] = sum;
  });
  return tf.tidy(() => {
    const logq = tf.reshape(tf.logSoftmax(logits), [rows * vocab, 1]) as tf.Tensor2D;
    const picked = tf.reshape(gatherRows(logq, flat), [rows, width]);
    const cross = tf.sum(tf.mul(picked, tf.tensor2d(weights, [rows, width])), 1);
    return tf.sub(tf.tensor1d(negEntropy), cross) as tf.Tensor1D;
  });
}

/**
 * sum_i KL_i / normaliser. The default, the number of samples, is "batchmean"; the trainers
 * pass the sample count of a micro-batch so a trajectory's samples weigh what they would as
 * separate sequences.
 */
export function softLabelKlLoss(logits: tf.Tensor2D, labels: readonly SoftLabel[], normaliser = labels.length): tf.Scalar {
  if (!(normaliser > 0)) throw new RangeError(`softLabelKlLoss: normaliser must be > 0, got ${normaliser}`);
  return tf.tidy(() => tf.div(tf.sum(softLabelKl(logits, labels)), normaliser) as tf.Scalar);
}
