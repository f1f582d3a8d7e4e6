// Turns a batch of token ids and its attention mask into what every layer of the
// TensorFlow.js model needs, in plain arrays: flat ids, position ids that count real tokens
// only (so left padding does not shift RoPE), and the additive causal + padding bias.
// Checking the batch here means a bad request fails with a named field, not inside tfjs.

/** A batch handed to the model is malformed; `field` names the argument. */
export class ModelInputError extends Error {
  constructor(
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${field}: ${problem}`);
    this.name = "ModelInputError";
  }
}

export interface Batch {
  batch: number;
  seq: number;
  /** [batch * seq] token ids, row-major. */
  ids: Int32Array;
  /** [batch * seq] 1 for a real token, 0 for padding. */
  mask: Uint8Array;
  /** [batch * seq] RoPE positions. */
  positions: Int32Array;
}

/**
 * Validates a rectangular batch. Without a mask every token is real; without position ids
 * a token's position is the number of real tokens before it, and padding gets position 1
 * (the Hugging Face generation convention; padded rows never reach a real token).
 */
export function prepareBatch(
  inputIds: number[][],
  attentionMask: number[][] | undefined,
  vocabSize: number,
  positionIds?: number[][],
): Batch {
  if (!Array.isArray(inputIds) || inputIds.length === 0) {
    throw new ModelInputError("input_ids", "expected a non-empty array of token id rows");
  }
  const batch = inputIds.length;
  const seq = Array.isArray(inputIds[0]) ? inputIds[0].length : 0;
  if (seq === 0) throw new ModelInputError("input_ids", "rows must be non-empty arrays");
  const ids = flatten("input_ids", inputIds, batch, seq, (v) => Number.isInteger(v) && v >= 0 && v < vocabSize, `token ids in [0, ${vocabSize})`);
  const mask = attentionMask === undefined
    ? new Int32Array(batch * seq).fill(1)
    : flatten("attention_mask", attentionMask, batch, seq, (v) => v === 0 || v === 1, "0 or 1");
  const positions = positionIds === undefined
    ? countRealTokens(mask, batch, seq)
    : flatten("position_ids", positionIds, batch, seq, (v) => Number.isInteger(v) && v >= 0, "non-negative integers");
  return { batch, seq, ids, mask: Uint8Array.from(mask), positions };
}

function flatten(field: string, rows: number[][], batch: number, seq: number, valid: (v: number) => boolean, what: string): Int32Array {
  if (!Array.isArray(rows) || rows.length !== batch) {
    throw new ModelInputError(field, `expected ${batch} rows, got ${Array.isArray(rows) ? rows.length : typeof rows}`);
  }
  const out = new Int32Array(batch * seq);
  for (let b = 0; b < batch; b++) {
    const row = rows[b];
    if (!Array.isArray(row) || row.length !== seq) {
      throw new ModelInputError(field, `row ${b} has length ${Array.isArray(row) ? row.length : "?"}, expected ${seq} (pad rows to one length)`);
    }
    for (let t = 0; t < seq; t++) {
      const v = row[t];
      if (!valid(v)) throw new ModelInputError(field, `[${b}][${t}] is ${JSON.stringify(v)}; expected ${what}`);
      out[b * seq + t] = v;
    }
  }
  return out;
}

function countRealTokens(mask: Int32Array, batch: number, seq: number): Int32Array {
  const positions = new Int32Array(batch * seq);
  for (let b = 0; b < batch; b++) {
    let seen = 0;
    for (let t = 0; t < seq; t++) {
      const i = b * seq + t;
      positions[i] = mask[i] ? seen : 1;
      seen += mask[i];
    }
  }
  return positions;
}

/**
 * [batch, 1, seq, seq] additive bias: 0 where query t may attend to key s (s <= t and s is
 * real), a large negative number elsewhere. Finite rather than -Infinity so a padded query
 * row with nothing to attend to stays finite: a NaN there would poison the backward pass
 * through 0 * NaN even though no loss reads that row.
 */
export function attentionBias({ batch, seq, mask }: Batch): Float32Array {
  const bias = new Float32Array(batch * seq * seq).fill(MASKED);
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < seq; t++) {
      const row = (b * seq + t) * seq;
      for (let s = 0; s <= t; s++) if (mask[b * seq + s]) bias[row + s] = 0;
    }
  }
  return bias;
}

const MASKED = -1e9;
