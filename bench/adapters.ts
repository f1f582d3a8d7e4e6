// Section "adapters": what serving several adapters in one batch costs. The expert's greedy
// decode rate through the runner the inference service uses (CausalLmSession.step on the
// served graph, whose LoRA inputs carry each row's adapter), for the same prompts and the
// same number of streams two ways: every row on one adapter, and the rows spread over three
// adapters in turn. The adapters have rank 8 on every projection (q, k, v, o, gate, up,
// down) and random weights. The two ways alternate window by window (and which goes first)
// from their own caches, so a machine whose load drifts weighs on both alike.
import type { ModelConfig } from "#core/model/config.ts";
import { randomLoraAdapter } from "#core/model/lora.ts";
import type { LoraSettings } from "#core/model/lora.ts";
import { LINEAR_MODULES } from "#core/model/weights.ts";
import { argmaxToken } from "#core/math/sampling.ts";
import { servedGraph } from "#inference/engine/served-model.ts";
import type { AdapterInputs } from "#inference/model/lora-inputs.ts";
import { CausalLmSession } from "#inference/model/session.ts";
import type { StepResult } from "#inference/model/session.ts";
import type { KvCache } from "#inference/model/kv-cache.ts";
import { preparePair } from "./models.ts";
import type { PairInfo } from "./sampling.ts";
import { pairInfo } from "./sampling.ts";
import type { BenchSettings } from "./settings.ts";
import type { Measured } from "./stats.ts";
import { BenchInputError, measured, ratio } from "./stats.ts";
import { randomPrompts } from "./workloads.ts";

export interface AdapterMixRow {
  streams: number;
  /** Tokens/s with every row on one adapter. */
  one: Measured;
  /** Tokens/s with row i on adapter i mod 3. */
  mixed: Measured;
  /** mixed / one (medians). */
  ratio: number | null;
}

export interface AdapterMixPair {
  pair: PairInfo;
  promptTokens: number;
  stepsPerRepeat: number;
  repeats: number;
  rows: AdapterMixRow[];
}

export interface AdapterMixResult {
  how: string;
  rank: number;
  adapters: number;
  pairs: AdapterMixPair[];
}

const ADAPTERS = 3;
const RANK = 8;

export const ADAPTERS_HOW =
  `greedy decode steps of the expert (CausalLmSession.step on the served graph with LoRA inputs) after an untimed prefill and first step; ` +
  `${ADAPTERS} random adapters of rank ${RANK} on ${LINEAR_MODULES.join(", ")}; "one": every row on the first adapter; "mixed": row i on adapter i mod ${ADAPTERS}; ` +
  `the two ways alternate window by window, which one first alternating too, each from its own caches, on the same prompts`;

/** Row i's adapter: the first for all, or the adapters in turn. */
export function rowAdapters<T>(adapters: readonly T[], rows: number, mixed: boolean): T[] {
  if (adapters.length === 0) throw new BenchInputError("adapters", "must hold at least one adapter");
  if (!Number.isInteger(rows) || rows < 1) throw new BenchInputError("rows", `must be a positive integer, got ${rows}`);
  return Array.from({ length: rows }, (_, i) => adapters[mixed ? i % adapters.length : 0]);
}

function settingsFor(): LoraSettings {
  return { rank: RANK, alpha: 2 * RANK, dropout: 0, targetModules: [...LINEAR_MODULES] };
}

/** Random adapters for `config`; small weights keep the adapted expert's logits in a sane range. */
function adaptersFor(session: CausalLmSession, config: ModelConfig): AdapterInputs[] {
  return Array.from({ length: ADAPTERS }, (_, i) => session.prepareAdapter(randomLoraAdapter(config, 100 + i, settingsFor(), 0.02)));
}

interface Lane {
  caches: KvCache[];
  adapters: AdapterInputs[];
  last: StepResult[];
}

async function decodeWindow(session: CausalLmSession, lane: Lane, steps: number): Promise<number> {
  const started = performance.now();
  for (let s = 0; s < steps; s++) {
    lane.last = await session.step(lane.last.map((o, b) => ({ cache: lane.caches[b], tokens: [argmaxToken(o.logProbs)], adapter: lane.adapters[b] })));
  }
  return (lane.caches.length * steps) / ((performance.now() - started) / 1000);
}

async function lane(session: CausalLmSession, prompts: number[][], adapters: AdapterInputs[]): Promise<Lane> {
  const caches = prompts.map(() => session.newCache());
  const prefill = await session.step(prompts.map((tokens, b) => ({ cache: caches[b], tokens, adapter: adapters[b] })));
  const l = { caches, adapters, last: prefill };
  // The first decode step builds the mixed batch's stack of factors: untimed, as a server's first step after a join.
  await decodeWindow(session, l, 1);
  return l;
}

export async function runAdapters(settings: BenchSettings, log: (line: string) => void): Promise<AdapterMixResult> {
  const pairs: AdapterMixPair[] = [];
  for (const w of settings.adapters.pairs) {
    const prepared = await preparePair(w.recipe, settings.cacheDir, log);
    const { config, graph } = servedGraph(prepared.expert.dir);
    // Each lane's caches grow by one token per step: the prefill, one untimed step, then every window.
    const longest = w.promptTokens + 1 + w.steps * w.repeats;
    if (longest > config.maxPositionEmbeddings) {
      throw new BenchInputError("adapters.steps", `${w.promptTokens} prompt tokens + 1 + ${w.repeats} x ${w.steps} steps = ${longest} positions, beyond ${w.recipe.name}'s context of ${config.maxPositionEmbeddings}`);
    }
    const session = await CausalLmSession.open(graph, { executionProvider: "cpu" });
    const rows: AdapterMixRow[] = [];
    try {
      const adapters = adaptersFor(session, config);
      for (const streams of w.streams) {
        const prompts = randomPrompts(config.vocabSize, streams, w.promptTokens, 23);
        const one = await lane(session, prompts, rowAdapters(adapters, streams, false));
        const mixed = await lane(session, prompts, rowAdapters(adapters, streams, true));
        const rates = { one: [] as number[], mixed: [] as number[] };
        for (let r = 0; r < w.repeats; r++) {
          // Which way goes first alternates too, so neither always follows the other.
          for (const way of r % 2 === 0 ? (["one", "mixed"] as const) : (["mixed", "one"] as const)) rates[way].push(await decodeWindow(session, way === "one" ? one : mixed, w.steps));
        }
        const row = { streams, one: measured(rates.one, "tokens/s"), mixed: measured(rates.mixed, "tokens/s"), ratio: 0 as number | null };
        row.ratio = ratio(row.mixed, row.one);
        rows.push(row);
        log(`  ${w.recipe.name} x${streams}: one adapter ${row.one.median.toFixed(1)} tokens/s, ${ADAPTERS} mixed ${row.mixed.median.toFixed(1)} tokens/s (${((row.ratio ?? 0) * 100).toFixed(0)}%)`);
      }
    } finally {
      await session.release();
    }
    pairs.push({ pair: pairInfo(prepared), promptTokens: w.promptTokens, stepsPerRepeat: w.steps, repeats: w.repeats, rows });
  }
  return { how: ADAPTERS_HOW, rank: RANK, adapters: ADAPTERS, pairs };
}
