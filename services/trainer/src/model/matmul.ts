// Matrix products for the model that never ask a backend to transpose an operand. The wasm
// backend's fast path (XNNPACK) covers only a plain a·b: with tfjs's transposeA/transposeB
// flags the same product runs 10-40x slower (measured: [1024,256]·[256,768] 10 ms plain,
// 114 ms as x·W^T, 392 ms as a^T·b), and tfjs's own matMul gradient uses those flags. Here
// a transpose is an explicit, cheap copy and the gradients are plain products too:
//   d(a·b)/da = dy · b^T,  d(a·b)/db = a^T · dy
// (Batched products, attention's [batch, heads, ...], also miss XNNPACK on wasm, about 4x;
// splitting them costs nearly as much, because wasm's Slice copies its whole input.)
import * as tf from "@tensorflow/tfjs";

/** Swaps the last two axes. */
export function transposeLast<T extends tf.Tensor>(x: T): T {
  const perm = [...Array(x.rank).keys()];
  [perm[x.rank - 2], perm[x.rank - 1]] = [perm[x.rank - 1], perm[x.rank - 2]];
  return tf.transpose(x, perm);
}

/** a·b, batched over leading axes; differentiable in both. */
export function matMul<T extends tf.Tensor>(a: T, b: tf.Tensor): T {
  const product = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [x, y, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    save([x, y]);
    return {
      value: tf.matMul(x, y),
      gradFunc: (dy: tf.Tensor, [xs, ys]: tf.Tensor[]) => [tf.matMul(dy, transposeLast(ys)), tf.matMul(transposeLast(xs), dy)],
    };
  });
  return product(a, b) as T;
}

/**
 * a·b where b is a frozen weight: only a gets a gradient. tfjs evaluates every gradient a
 * custom op returns, so the general form would waste one weight-sized product per layer on
 * weights that never change.
 */
export function matMulFrozen<T extends tf.Tensor>(a: T, frozen: tf.Tensor): T {
  const product = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [x] = args as [tf.Tensor];
    return {
      value: tf.matMul(x, frozen),
      // The weight outlives the pass (the model owns it), so the closure may read it.
      gradFunc: (dy: tf.Tensor) => inputGradient(dy, frozen),
    };
  });
  return product(a) as T;
}

/**
 * dy · w^T for w [in, out]. Either transpose the weight, or compute (w · dy^T)^T and
 * transpose the two activation-sized tensors instead: the output head has a vocabulary-wide
 * weight but the loss reads only a few positions, so the second is far cheaper there.
 */
function inputGradient(dy: tf.Tensor, w: tf.Tensor): tf.Tensor {
  const [inFeatures, outFeatures] = w.shape;
  const rows = dy.size / outFeatures;
  if (dy.rank === 2 && rows * (inFeatures + outFeatures) < inFeatures * outFeatures) {
    return tf.transpose(tf.matMul(w, tf.transpose(dy)));
  }
  return tf.matMul(dy, transposeLast(w));
}
