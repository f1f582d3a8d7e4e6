// Row lookups for embeddings and for picking the positions a loss reads. tfjs differentiates
// tf.gather through the UnsortedSegmentSum kernel, which the wasm backend does not have;
// ScatterNd, which adds up repeated rows, exists on every backend this project uses, so the
// gradient here is a scatter-add of the incoming rows.
import * as tf from "@tensorflow/tfjs";

/** table: [rows, width] -> [indices.length, width]; differentiable in `table`. */
export function gatherRows(table: tf.Tensor2D, indices: ArrayLike<number>): tf.Tensor2D {
  const rows = Int32Array.from(indices);
  const lookup = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const source = args[0] as tf.Tensor;
    return {
      value: tf.gather(source, tf.tensor1d(rows, "int32")),
      gradFunc: (dy: tf.Tensor) => tf.scatterND(tf.tensor2d(rows, [rows.length, 1], "int32"), dy, source.shape),
    };
  });
  return lookup(table) as tf.Tensor2D;
}

/**
 * table: [width, rows] -> [indices.length, width], i.e. rows of table^T. A tied embedding is
 * kept as [hidden, vocab] so the output projection is a plain product (see matmul.ts); the
 * input lookup then reads columns. Gradient: the same scatter-add, transposed back.
 */
export function gatherColumns(table: tf.Tensor2D, indices: ArrayLike<number>): tf.Tensor2D {
  const rows = Int32Array.from(indices);
  const lookup = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const source = args[0] as tf.Tensor2D;
    const [width, count] = source.shape;
    return {
      value: tf.transpose(tf.gather(source, tf.tensor1d(rows, "int32"), 1)),
      gradFunc: (dy: tf.Tensor) => tf.transpose(tf.scatterND(tf.tensor2d(rows, [rows.length, 1], "int32"), dy, [count, width])),
    };
  });
  return lookup(table) as tf.Tensor2D;
}
