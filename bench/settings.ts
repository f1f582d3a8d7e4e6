// How much work each benchmark section does, in one place: the full run (figures for the
// README; most of it the 0.5B-shaped pair at 64 streams and re-encoding its amateur) and
// --quick (a smoke test of every section: fewer cells, fewer tokens, fewer repeats).
import type { PairRecipe } from "./models.ts";
import { BUILT_IN_PAIR, DEFAULT_CACHE_DIR, QWEN05_PAIR } from "./models.ts";
import { SAMPLER_DEFAULTS } from "#trainer/sampling/config.ts";

// "limits" runs before the sections whose rates are held against its ceiling.
export const SECTIONS = ["step", "limits", "amateur", "decode", "adapters", "transport", "sampling", "training", "scale", "memory"] as const;
export type Section = (typeof SECTIONS)[number];

export interface PairWorkload {
  /** Unique among the workloads; names the rows of the tables and bench.json. */
  name: string;
  recipe: PairRecipe;
  /** "world": the built-in world's chat prompts; a number: random prompts of that many tokens. */
  prompts: "world" | number;
  /** Most new tokens per stream (the method samples at most 128). */
  newTokens: number;
  /** Concurrent streams for the lockstep runs through the engine. */
  streams: number[];
  /** Concurrent streams for the runs through the service (none: the service is not started). */
  serviceStreams: number[];
  /** Concurrent streams at which the amateur is also run the reference's way (re-encoding). */
  reencodeStreams: number[];
  /** Concurrent streams at which the step summary's old and new code are raced end to end. */
  summaryStreams: number[];
  repeats: number;
}

/** The amateur's cost, alone and inside the whole lockstep loop, at the method's length. */
export interface AmateurWorkload {
  name: string;
  recipe: PairRecipe;
  promptTokens: number;
  newTokens: number;
  /** Trajectories scored together (the same batch both ways). */
  streams: number;
  repeats: number;
  /** The whole lockstep loop at this length, or null to skip it. */
  endToEnd: { streams: number; repeats: number; maxPrefillBatch: number } | null;
}

export interface DecodeSettings {
  /** The pair whose expert is raced against PyTorch. */
  recipe: PairRecipe;
  batches: number[];
  promptTokens: number;
  /** Timed decode steps per repeat. */
  steps: number;
  repeats: number;
  maxPrefillBatch: number;
  /** The logits compared before timing: a prefill of this many tokens, then single steps. */
  parity: { prefillTokens: number; decodeTokens: number };
}

/** The adapters section: one adapter for every row against three mixed, on the same streams. */
export interface AdapterMixWorkload {
  recipe: PairRecipe;
  /** Concurrent streams (batch rows), each count measured both ways. */
  streams: number[];
  promptTokens: number;
  /** Timed decode steps per window. */
  steps: number;
  repeats: number;
}

export interface BenchSettings {
  quick: boolean;
  cacheDir: string;
  sampling: { pairs: PairWorkload[]; alpha: number; topK: number };
  amateur: { pairs: AmateurWorkload[] };
  decode: DecodeSettings;
  /** One adapter for every row against three mixed in the batch. */
  adapters: { pairs: AdapterMixWorkload[] };
  /** readBytes: the array each memory-read rate streams, far larger than the caches. */
  limits: { shapes: [number, number, number][]; minMs: number; repeats: number; readBytes: number };
  transport: { vocabSize: number; steps: { full32: number; full16: number; sparse: number }; repeats: number; alpha: number; topK: number };
  training: { loraWarmupSteps: number; loraSteps: number; pretrainWarmupSteps: number; pretrainSteps: number; matmulSize: number };
  /** Pairs whose service memory is measured, at these stream counts, each stream a random prompt of promptTokens and newTokens more. */
  memory: { pairs: PairRecipe[]; streams: number[]; promptTokens: number; newTokens: number };
  /** Per-step summary micro-benchmark (old and new code on 151,936-token distributions). */
  step: { vocabSize: number; calls: number; repeats: number };
  /** LoRA training at the 0.5B shape: one micro-batch of rows x seq tokens, labels selected positions per row. */
  scale: { rows: number; seq: number; labels: number; steps: number };
}

export function benchSettings(options: { quick: boolean; cacheDir?: string }): BenchSettings {
  const quick = options.quick;
  const cacheDir = options.cacheDir ?? DEFAULT_CACHE_DIR;
  const builtIn: PairWorkload = {
    name: BUILT_IN_PAIR.name,
    recipe: BUILT_IN_PAIR,
    prompts: "world",
    newTokens: 128,
    streams: [1, 4, 16, 64],
    serviceStreams: [1, 4, 16, 64],
    reencodeStreams: [1, 4, 16, 64],
    summaryStreams: [],
    repeats: quick ? 3 : 5,
  };
  // --quick runs the 0.5B-shaped pair through the engine only: starting its service (ONNX
  // Runtime prepacking 2 GB of weights, the 150k-token tokenizer) takes most of 10 s here.
  const qwen: PairWorkload = quick
    ? { name: QWEN05_PAIR.name, recipe: QWEN05_PAIR, prompts: 16, newTokens: 4, streams: [1, 4], serviceStreams: [], reencodeStreams: [4], summaryStreams: [4], repeats: 3 }
    : { name: QWEN05_PAIR.name, recipe: QWEN05_PAIR, prompts: 16, newTokens: 8, streams: [1, 4, 16, 64], serviceStreams: [1, 4, 16, 64], reencodeStreams: [1, 4, 16, 64], summaryStreams: [64], repeats: 3 };
  // One stream of the method's length, so the quadratic cost of re-encoding shows at scale.
  const qwenLong: PairWorkload = { name: `${QWEN05_PAIR.name}, long`, recipe: QWEN05_PAIR, prompts: 64, newTokens: 64, streams: [1], serviceStreams: [], reencodeStreams: [1], summaryStreams: [], repeats: 3 };
  return {
    quick,
    cacheDir,
    sampling: { pairs: quick ? [builtIn, qwen] : [builtIn, qwen, qwenLong], alpha: 0.2, topK: 4 },
    // The method's trajectory: 128 new tokens after a 64-token prompt. Re-encoding the
    // 0.5B-shaped amateur costs about 16,000 positions per trajectory, hence few streams.
    amateur: {
      pairs: [
        { name: BUILT_IN_PAIR.name, recipe: BUILT_IN_PAIR, promptTokens: 64, newTokens: 128, streams: 16, repeats: quick ? 2 : 3, endToEnd: { streams: 64, repeats: quick ? 1 : 3, maxPrefillBatch: 64 } },
        // --quick shortens the 0.5B-shaped trajectories (a smoke test: re-encoding 64+128 tokens is 16,320 positions).
        quick
          ? { name: QWEN05_PAIR.name, recipe: QWEN05_PAIR, promptTokens: 16, newTokens: 32, streams: 1, repeats: 1, endToEnd: { streams: 4, repeats: 1, maxPrefillBatch: 4 } }
          : // As many trajectories as a trainer keeps in flight per endpoint by default (SAMPLER_DEFAULTS.concurrency,
            // 16): a lockstep step reads the amateur's weights (the LM head's 68M) once for the whole batch, so its
            // cost per trajectory depends on the batch, and this is the batch the trainer brings. Re-encoding 16
            // trajectories is ~260,000 positions. End to end, prompts are prefilled 4 at a time, chosen when the runner
            // still computed logits at every prompt position (156 MB per model and group); with the last one kept, 8 at
            // a time (the service's 512 prompt tokens per prefill batch) measured the same (bench/end-to-end.ts
            // --prefill-group 4 / 8, alternated twice: 107.9, 107.5 / 109.8, 107.3 tokens/s).
            { name: QWEN05_PAIR.name, recipe: QWEN05_PAIR, promptTokens: 64, newTokens: 128, streams: SAMPLER_DEFAULTS.concurrency, repeats: 1, endToEnd: { streams: 64, repeats: 1, maxPrefillBatch: 4 } },
      ],
    },
    decode: quick
      ? { recipe: QWEN05_PAIR, batches: [1, 16], promptTokens: 16, steps: 4, repeats: 2, maxPrefillBatch: 8, parity: { prefillTokens: 6, decodeTokens: 2 } }
      : { recipe: QWEN05_PAIR, batches: [1, 16, 64], promptTokens: 32, steps: 8, repeats: 3, maxPrefillBatch: 8, parity: { prefillTokens: 8, decodeTokens: 3 } },
    adapters: {
      pairs: quick
        ? [
            { recipe: BUILT_IN_PAIR, streams: [6], promptTokens: 8, steps: 4, repeats: 2 },
            { recipe: QWEN05_PAIR, streams: [3], promptTokens: 8, steps: 1, repeats: 1 },
          ]
        : [
            { recipe: BUILT_IN_PAIR, streams: [16, 64], promptTokens: 16, steps: 32, repeats: 5 },
            { recipe: QWEN05_PAIR, streams: [16, 64], promptTokens: 16, steps: 4, repeats: 3 },
          ],
    },
    limits: {
      // A decode batch through the 0.5B expert's MLP, a square product, one token alone, and the
      // 0.5B-shaped amateur's LM head at the amateur section's 16 lockstep rows (its 272 MB of
      // weights read for 16 rows: what bounds a lockstep step from below).
      shapes: [
        [64, 896, 4864],
        [1024, 1024, 1024],
        [1, 896, 4864],
        [16, 448, 151_936],
      ],
      minMs: quick ? 150 : 400,
      repeats: quick ? 3 : 5,
      readBytes: quick ? 256 * 2 ** 20 : 2 ** 30,
    },
    transport: { vocabSize: 151_936, steps: quick ? { full32: 100, full16: 200, sparse: 3000 } : { full32: 300, full16: 600, sparse: 10_000 }, repeats: quick ? 3 : 5, alpha: 0.2, topK: 4 },
    training: quick
      ? { loraWarmupSteps: 1, loraSteps: 4, pretrainWarmupSteps: 1, pretrainSteps: 3, matmulSize: 256 }
      : { loraWarmupSteps: 2, loraSteps: 10, pretrainWarmupSteps: 2, pretrainSteps: 8, matmulSize: 256 },
    // The method's trajectory (64 + 128 tokens), so the KV cache a stream holds at its end is what the service serves.
    memory: quick
      ? { pairs: [BUILT_IN_PAIR], streams: [1, 4, 16, 64], promptTokens: 16, newTokens: 4 }
      : { pairs: [BUILT_IN_PAIR, QWEN05_PAIR], streams: [1, 4, 16, 64], promptTokens: 64, newTokens: 128 },
    step: { vocabSize: 151_936, calls: quick ? 10 : 30, repeats: quick ? 3 : 7 },
    // The method's trajectory length (64 + 128 tokens would be 192; 128 keeps float64 PyTorch's reference step near a minute).
    scale: quick ? { rows: 1, seq: 32, labels: 2, steps: 1 } : { rows: 2, seq: 128, labels: 4, steps: 3 },
  };
}
