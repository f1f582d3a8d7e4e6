// The amateur section's end-to-end loop alone (expert greedy + amateur lockstep + the SPARSE
// summary graph every step, as bench/amateur.ts runs it), without the minutes of re-encoding
// around it: one warm-up and one timed run, the decode step split into its parts, and the
// GLIBC_TUNABLES it ran under, so two runs with and without them compare.
//   npx tsx bench/end-to-end.ts <expertDir> <amateurDir> [--streams 64] [--prompt 64] [--new 128] [--prefill-group 8]
import { readModelConfig } from "#core/model/config.ts";
import type { SummarizeOptions } from "#core/math/sparse-step.ts";
import { PairSummaryGraph } from "#inference/model/pair-summary-graph.ts";
import { join } from "node:path";
import { decodeStepMs, decodeTokensPerSecond, openServedSession, runEngineTrajectories, tokensPerSecond } from "./engine-lockstep.ts";
import { option } from "./script-option.ts";
import { randomPrompts } from "./workloads.ts";

const args = process.argv.slice(2);
const [expertDir, amateurDir] = args;
if (!expertDir || !amateurDir || expertDir.startsWith("--")) throw new Error("usage: end-to-end.ts <expertDir> <amateurDir> [--streams 64] [--prompt 64] [--new 128] [--prefill-group 8]");
const streams = Number(option(args, "--streams", "64"));
const promptTokens = Number(option(args, "--prompt", "64"));
const newTokens = Number(option(args, "--new", "128"));
const prefillGroup = Number(option(args, "--prefill-group", "8"));
const vocab = readModelConfig(join(expertDir, "config.json")).vocabSize;

const expert = await openServedSession(expertDir, "expert");
const amateur = await openServedSession(amateurDir, "amateur");
const summaryGraph = await PairSummaryGraph.open(vocab);
try {
  const prompts = randomPrompts(vocab, streams, promptTokens, 31);
  const summarize = (logpExpert: Float32Array, logpAmateur: Float32Array, options: SummarizeOptions) => summaryGraph.summarize({ logpExpert, logpAmateur, ...options });
  const run = (tokens: number) =>
    runEngineTrajectories({ expert, amateur, prompts, newTokens: tokens, scoring: "kv-cache", summarize, summary: { alpha: 0.1, topK: 20 }, eosTokenIds: [], maxPrefillBatch: prefillGroup });
  await run(2);
  const timing = await run(newTokens);
  const ms = decodeStepMs(timing);
  const round = (x: number) => Number(x.toFixed(1));
  console.log(
    JSON.stringify({
      streams,
      promptTokens,
      newTokens,
      glibcTunables: process.env.GLIBC_TUNABLES ?? null,
      tokensPerSecond: round(tokensPerSecond(timing)),
      decodeTokensPerSecond: round(decodeTokensPerSecond(timing)),
      decodeStepMs: { step: round(ms.step), expert: round(ms.expert), amateur: round(ms.amateur), summaries: round(ms.summary) },
    }),
  );
} finally {
  await Promise.all([expert.release(), amateur.release(), summaryGraph.release()]);
}
