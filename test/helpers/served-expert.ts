// The check the whole system rests on, shared by the tests that train adapters: the inference
// service's expert (with its active adapter) gives the same next-token distributions as the
// trainer's TensorFlow.js expert with that adapter, at every position of a sequence.
import * as tf from "@tensorflow/tfjs";
import { loadModelDir } from "#core/formats/model-dir.ts";
import { logSoftmax } from "#core/math/distribution.ts";
import type { LoraAdapter } from "#core/model/lora.ts";
import type { InferenceServer } from "#inference/main.ts";
import { fullLogProbs } from "#trainer/sampling/step-selection.ts";
import { LoraLayers } from "#trainer/model/lora.ts";
import { CausalLM } from "#trainer/model/transformer.ts";
import { clients, collect, FULL32, idsPrompt } from "#test/inference/helpers.ts";

export interface ServedComparison {
  /** The adapter version the server used for the Score call. */
  servedVersion: string;
  positions: number;
  /** Largest |served - trainer| log-probability over every position and token. */
  maxDiff: number;
  /** Largest |served - base expert| log-probability: how far training moved the expert. */
  maxFromBase: number;
}

export async function compareServedExpert(server: InferenceServer, expertDir: string, adapter: LoraAdapter, ids: number[]): Promise<ServedComparison> {
  const { config, weights } = loadModelDir(expertDir);
  const vocab = config.vocabSize;
  const c = clients(server);
  const messages = await collect(c.inference.score({ prompt: idsPrompt(ids), distributions: FULL32 }));
  c.close();
  const servedVersion = (messages[0].event.value as { adapterVersion: string }).adapterVersion;
  const served = messages.slice(1).map(({ event }) => {
    if (event.case !== "position" || event.value.distributions.case !== "full") throw new Error(`unexpected Score message ${event.case}`);
    return { position: event.value.position, expert: fullLogProbs(event.value.distributions.value, vocab).expert };
  });

  const lora = LoraLayers.fromAdapter(config, adapter);
  const model = new CausalLM(config, weights, { adapter: lora });
  const logits = tf.tidy(() => model.forward([ids]).dataSync() as Float32Array);
  model.useAdapter(null);
  const baseLogits = tf.tidy(() => model.forward([ids]).dataSync() as Float32Array);
  model.dispose();
  lora.dispose();

  let maxDiff = 0;
  let maxFromBase = 0;
  for (const { position, expert } of served) {
    // The distribution at `position` is read from the logits of the token before it.
    const row = position - 1;
    const trainer = logSoftmax(logits, row * vocab, vocab);
    const base = logSoftmax(baseLogits, row * vocab, vocab);
    for (let a = 0; a < vocab; a++) {
      maxDiff = Math.max(maxDiff, Math.abs(expert[a] - trainer[a]));
      maxFromBase = Math.max(maxFromBase, Math.abs(expert[a] - base[a]));
    }
  }
  return { servedVersion, positions: served.length, maxDiff, maxFromBase };
}
