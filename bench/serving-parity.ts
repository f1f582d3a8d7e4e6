// Serving parity (issue 13 item 2): the expert as the inference service serves it with a
// trained adapter (its served graph, the adapter as LoRA side-branch inputs) against the
// trainer's ONNX Runtime engine with the same adapter (OnnxLoraExpert.logProbsAt), on the
// same random prompts. Compared: log-probabilities at several positions of each prompt, at
// the served top tokens there and at random ones. The two sides run one after the other, so
// at the 0.5B shape the process holds one copy of the weights at a time.
import { loadModelDir } from "#core/formats/model-dir.ts";
import { readPeftAdapter } from "#core/formats/peft.ts";
import { SeededRandom } from "#core/math/random.ts";
import { servedGraph } from "#inference/engine/served-model.ts";
import { CausalLmSession } from "#inference/model/session.ts";
import { LoraLayers } from "#trainer/model/lora.ts";
import { OnnxLoraExpert } from "#trainer/model/onnx-lora-expert.ts";
import type { SelectedPosition } from "#trainer/model/transformer.ts";

/** Largest absolute log-probability difference accepted (issue 13). */
export const SERVING_TOLERANCE = 1e-3;

export interface ServingParityOptions {
  expertDir: string;
  /** A PEFT adapter directory (adapter_config.json + adapter_model.safetensors). */
  adapterDir: string;
  prompts: number;
  /** Tokens per prompt. */
  len: number;
  /** Positions compared per prompt (the last one always among them). */
  positions: number;
  /** Tokens compared per position: the served top ones, then as many random ones. */
  topTokens: number;
  randomTokens: number;
  seed: number;
  /** ONNX Runtime intra-op threads on both sides (default: its own choice). */
  threads?: number;
  log: (line: string) => void;
}

export interface ServingParityResult {
  compared: number;
  maxAbsDiff: number;
  /** Where the largest difference is: prompt, position, token, and the two values. */
  worst: { prompt: number; position: number; id: number; served: number; trainer: number };
  /** Largest change the adapter makes to the served values compared: parity must be far finer. */
  adapterEffect: number;
  servedSeconds: number;
  trainerSeconds: number;
  tolerance: number;
  pass: boolean;
}

interface Query {
  prompt: number;
  position: number;
  id: number;
  served: number;
  base: number;
}

const seconds = (since: number) => (performance.now() - since) / 1000;

export async function runServingParity(o: ServingParityOptions): Promise<ServingParityResult> {
  for (const name of ["prompts", "len", "positions", "topTokens"] as const) {
    if (!Number.isInteger(o[name]) || o[name] < 1) throw new RangeError(`${name} must be a positive integer, got ${o[name]}`);
  }
  if (!Number.isInteger(o.randomTokens) || o.randomTokens < 0) throw new RangeError(`randomTokens must be a non-negative integer, got ${o.randomTokens}`);
  const threads = o.threads === undefined ? {} : { threads: o.threads };

  // Served side: the graph the inference service builds for a Hugging Face directory.
  let started = performance.now();
  const { config, graph } = servedGraph(o.expertDir);
  const adapter = readPeftAdapter(o.adapterDir, config);
  const session = await CausalLmSession.open(graph, { executionProvider: "cpu", ...threads });
  const V = config.vocabSize;
  const random = new SeededRandom(o.seed);
  const prompts = Array.from({ length: o.prompts }, () => Array.from({ length: o.len }, () => random.int(V)));
  const queries: Query[] = [];
  try {
    const inputs = session.prepareAdapter(adapter);
    for (let p = 0; p < prompts.length; p++) {
      const [served] = await session.step([{ cache: session.newCache(), tokens: prompts[p], adapter: inputs, allPositions: true }]);
      const [base] = await session.step([{ cache: session.newCache(), tokens: prompts[p], allPositions: true }]);
      const positions = new Set([o.len - 1]);
      while (positions.size < Math.min(o.positions, o.len)) positions.add(random.int(o.len));
      for (const t of [...positions].sort((a, b) => a - b)) {
        const logq = served.positionLogProbs!.subarray(t * V, (t + 1) * V);
        const baseLogq = base.positionLogProbs!.subarray(t * V, (t + 1) * V);
        const ids = new Set(topIds(logq, o.topTokens));
        const wanted = ids.size + o.randomTokens;
        while (ids.size < Math.min(wanted, V)) ids.add(random.int(V));
        for (const id of ids) queries.push({ prompt: p, position: t, id, served: logq[id], base: baseLogq[id] });
      }
    }
  } finally {
    await session.release();
  }
  const servedSeconds = seconds(started);
  o.log(`served: ${queries.length} log-probabilities from ${o.prompts} prompts of ${o.len} tokens in ${servedSeconds.toFixed(1)} s`);

  // Trainer side: the gradient engine's forward with the adapter read back from the same files.
  started = performance.now();
  const { weights } = loadModelDir(o.expertDir);
  const expert = await OnnxLoraExpert.create(config, weights, adapter.settings, { tokenBudget: o.len, ...threads });
  const lora = LoraLayers.fromAdapter(config, adapter, { source: o.adapterDir });
  const trainer: number[] = [];
  try {
    for (let p = 0; p < prompts.length; p++) {
      const mine = queries.filter((q) => q.prompt === p);
      const values = await expert.logProbsAt([prompts[p]], mine.map((q) => ({ position: [0, q.position] as SelectedPosition, id: q.id })), lora);
      trainer.push(...values);
    }
  } finally {
    lora.dispose();
    await expert.dispose();
  }
  const trainerSeconds = seconds(started);
  o.log(`trainer engine: the same ${queries.length} in ${trainerSeconds.toFixed(1)} s`);

  let worstIndex = 0;
  let maxAbsDiff = 0;
  let adapterEffect = 0;
  queries.forEach((q, i) => {
    const diff = Math.abs(q.served - trainer[i]);
    // A NaN on either side must fail, not slip past a comparison.
    if (!(diff <= maxAbsDiff)) {
      maxAbsDiff = Number.isNaN(diff) ? Infinity : diff;
      worstIndex = i;
    }
    adapterEffect = Math.max(adapterEffect, Math.abs(q.served - q.base));
  });
  const w = queries[worstIndex];
  return {
    compared: queries.length,
    maxAbsDiff,
    worst: { prompt: w.prompt, position: w.position, id: w.id, served: w.served, trainer: trainer[worstIndex] },
    adapterEffect,
    servedSeconds,
    trainerSeconds,
    tolerance: SERVING_TOLERANCE,
    pass: maxAbsDiff <= SERVING_TOLERANCE,
  };
}

/** The `k` ids of highest log-probability, best first. */
function topIds(logq: Float32Array, k: number): number[] {
  const best: number[] = [];
  for (let id = 0; id < logq.length; id++) {
    if (best.length < k || logq[id] > logq[best[best.length - 1]]) {
      best.push(id);
      best.sort((a, b) => logq[b] - logq[a]);
      if (best.length > k) best.pop();
    }
  }
  return best;
}

export function describeServingParity(r: ServingParityResult): string[] {
  const w = r.worst;
  return [
    `compared ${r.compared} log-probabilities; the adapter moves them by up to ${r.adapterEffect.toExponential(2)}`,
    `max |served - trainer| = ${r.maxAbsDiff.toExponential(2)} (prompt ${w.prompt}, position ${w.position}, token ${w.id}: ${w.served.toFixed(6)} vs ${w.trainer.toFixed(6)}); tolerance ${r.tolerance}: ${r.pass ? "PASS" : "FAIL"}`,
  ];
}
