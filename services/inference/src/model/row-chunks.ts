// A log-probability row seen as [count, length] chunks inside an ONNX graph, for the two
// operations over a whole vocabulary that gain from it: sums in two levels and top-k through
// the chunk maxima. Shared by the graphs that run per-step distribution work.
import type { GraphBuilder } from "#core/formats/onnx-builder.ts";
import { ONNX_DATA_TYPE, int } from "#core/formats/onnx-builder.ts";

/**
 * The chunk length of the two-level sums: the largest divisor of the vocabulary up to its
 * square root, so neither level adds up many terms (151,936 = 1,187 chunks of 128). A prime
 * vocabulary has none and is summed in one level.
 */
export function sumChunk(vocabSize: number): number {
  let chunk = 1;
  for (let d = 2; d * d <= vocabSize; d++) if (vocabSize % d === 0) chunk = d;
  return chunk === 1 ? vocabSize : chunk;
}

/** A row seen as [count, length] chunks, and the two operations that gain from it. */
export class RowChunks {
  private readonly length: number;
  private readonly count: number;
  private readonly grid: string;

  constructor(
    private readonly g: GraphBuilder,
    vocabSize: number,
  ) {
    this.length = sumChunk(vocabSize);
    this.count = vocabSize / this.length;
    this.grid = g.int64([this.count, this.length]);
  }

  /**
   * Sum in two levels, each chunk and then the chunks' sums: ONNX Runtime's float32 ReduceSum
   * over a whole 151,936-token row was measured 6e-5 off on a mass of 1.
   */
  sum(x: string): string {
    const { g } = this;
    const perChunk = g.op("ReduceSum", [g.op("Reshape", [x, this.grid]), g.int64([1])], { keepdims: int(0) });
    return g.op("ReduceSum", [perChunk, g.int64([0])], { keepdims: int(0) });
  }

  /**
   * TopK of the row without a pass of TopK over all of it: the k best tokens lie in the k
   * chunks with the best maxima (every chunk ranked above a token's own holds a token that
   * beats it), so TopK runs over the chunk maxima and then over those chunks' tokens only.
   * The chunks are taken in id order, so a tie between positions is a tie between ids.
   */
  topK(x: string, k: string): { logp: string; ids: string } {
    const { g } = this;
    const grid = g.op("Reshape", [x, this.grid]);
    const maxima = g.op("ReduceMax", [grid, g.int64([1])], { keepdims: int(0) });
    const chunkK = g.op("Min", [k, g.int64([this.count])]);
    const [, best] = g.opMulti("TopK", [maxima, chunkK], { axis: int(0), largest: int(1), sorted: int(1) }, { outputs: [2] });
    // Chunk indices below 2^24 are exact in float32; TopK of the smallest sorts them ascending.
    const [ascending] = g.opMulti("TopK", [g.op("Cast", [best], { to: int(ONNX_DATA_TYPE.float32) }), chunkK], { axis: int(0), largest: int(0), sorted: int(1) }, { outputs: [2] });
    const picked = g.op("Cast", [ascending], { to: int(ONNX_DATA_TYPE.int64) });
    const candidates = g.op("Reshape", [g.op("Gather", [grid, picked], { axis: int(0) }), g.int64([-1])]);
    const [logp, positions] = g.opMulti("TopK", [candidates, k], { axis: int(0), largest: int(1), sorted: int(1) }, { outputs: [2] });
    const firstIds = g.op("Mul", [g.op("Unsqueeze", [picked, g.int64([1])]), g.int64([this.length])]);
    const candidateIds = g.op("Reshape", [g.op("Add", [firstIds, g.int64(Array.from({ length: this.length }, (_, j) => j))]), g.int64([-1])]);
    return { logp, ids: g.op("Gather", [candidateIds, positions], { axis: int(0) }) };
  }
}
