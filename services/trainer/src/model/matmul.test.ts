import * as tf from "@tensorflow/tfjs";
import { beforeAll, describe, expect, it } from "vitest";
import { selectBackend } from "./backend.ts";
import { gatherColumns, gatherRows } from "./gather-rows.ts";
import { matMul, matMulFrozen, transposeLast } from "./matmul.ts";

beforeAll(async () => {
  await selectBackend();
});

const close = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);

describe("matMul without transpose flags", () => {
  it.each([
    ["2-D", [5, 7], [7, 3]],
    ["batched 4-D", [2, 3, 5, 4], [2, 3, 4, 6]],
  ])("%s: value and both gradients equal tfjs's own matMul", (_, aShape, bShape) => {
    const a = tf.randomNormal(aShape, 0, 1, "float32", 1);
    const b = tf.randomNormal(bShape, 0, 1, "float32", 2);
    const weight = tf.randomNormal([...aShape.slice(0, -1), bShape[bShape.length - 1]], 0, 1, "float32", 3);
    const ours = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(matMul(x, y), weight)))([a, b]);
    const theirs = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(tf.matMul(x, y), weight)))([a, b]);
    expect(close(matMul(a, b), tf.matMul(a, b))).toBeLessThan(1e-5);
    expect(close(ours[0], theirs[0])).toBeLessThan(1e-5);
    expect(close(ours[1], theirs[1])).toBeLessThan(1e-5);
  });

  // Few rows against a wide weight take the activation-transposing branch; many rows the other.
  it.each([[2], [400]])("frozen weight, %i rows: input gradient equals tfjs's", (rows) => {
    const x = tf.randomNormal([rows, 16], 0, 1, "float32", 4);
    const w = tf.randomNormal([16, 40], 0, 1, "float32", 5);
    const weight = tf.randomNormal([rows, 40], 0, 1, "float32", 6);
    const ours = tf.grad((v: tf.Tensor) => tf.sum(tf.mul(matMulFrozen(v, w), weight)))(x);
    const theirs = tf.grad((v: tf.Tensor) => tf.sum(tf.mul(tf.matMul(v, w), weight)))(x);
    expect(close(ours, theirs)).toBeLessThan(1e-4);
  });

  it("transposeLast swaps only the last two axes", () => {
    const x = tf.tensor3d([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [2, 2, 3]);
    expect(transposeLast(x).arraySync()).toEqual([[[1, 4], [2, 5], [3, 6]], [[7, 10], [8, 11], [9, 12]]]);
  });
});

describe("row and column lookups", () => {
  const weightsOut = tf.tensor2d([1, 10, 100, 1000, 7, 7], [3, 2]);

  it("gatherRows differentiates as a scatter-add, repeated rows summed", () => {
    const table = tf.tensor2d([1, 2, 3, 4, 5, 6], [3, 2]);
    expect(gatherRows(table, [2, 0]).arraySync()).toEqual([[5, 6], [1, 2]]);
    const grad = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(gatherRows(t as tf.Tensor2D, [2, 0, 2]), weightsOut)))(table);
    expect(Array.from(grad.dataSync())).toEqual([100, 1000, 0, 0, 8, 17]);
  });

  it("gatherColumns reads rows of the transposed table, gradient transposed back", () => {
    const table = tf.tensor2d([1, 3, 5, 2, 4, 6], [2, 3]); // columns are the rows [1,2] [3,4] [5,6]
    expect(gatherColumns(table, [2, 0]).arraySync()).toEqual([[5, 6], [1, 2]]);
    const grad = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(gatherColumns(t as tf.Tensor2D, [2, 0, 2]), weightsOut)))(table);
    expect(grad.arraySync()).toEqual([[100, 0, 8], [1000, 0, 17]]);
  });
});
