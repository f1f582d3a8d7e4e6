// The amateur section's end-to-end loop alone (expert greedy + amateur lockstep + the SPARSE
// summary graph every step, opened as bench/amateur.ts opens it, with the bench's summary
// settings), without the minutes of re-encoding around it: one warm-up and one timed run, the
// decode step split into its parts, and the GLIBC_TUNABLES and Node flags it ran under, so two
// runs with and without them compare (`node --single-threaded-gc --import tsx bench/end-to-end.ts ...`).
//   npx tsx bench/end-to-end.ts <expertDir> <amateurDir> [--streams 64] [--prompt 64] [--new 128] [--prefill-group 8]
import { join } from "node:path";
import { readModelConfig } from "#core/model/config.ts";
import { recommendedNodeFlagsIn } from "#inference/model/process-settings.ts";
import { decodeStepMs, decodeTokensPerSecond, openLockstepPair, tokensPerSecond } from "./engine-lockstep.ts";
import { option } from "./script-option.ts";
import { benchSettings } from "./settings.ts";
import { randomPrompts } from "./workloads.ts";

const args = process.argv.slice(2);
const [expertDir, amateurDir] = args;
if (!expertDir || !amateurDir || expertDir.startsWith("--")) throw new Error("usage: end-to-end.ts <expertDir> <amateurDir> [--streams 64] [--prompt 64] [--new 128] [--prefill-group 8]");
const streams = Number(option(args, "--streams", "64"));
const promptTokens = Number(option(args, "--prompt", "64"));
const newTokens = Number(option(args, "--new", "128"));
const prefillGroup = Number(option(args, "--prefill-group", "8"));
const vocab = readModelConfig(join(expertDir, "config.json")).vocabSize;
const { alpha, topK } = benchSettings({ quick: false }).sampling;

const pair = await openLockstepPair(expertDir, amateurDir, vocab, { alpha, topK });
try {
  const prompts = randomPrompts(vocab, streams, promptTokens, 31);
  await pair.run(prompts, 2, prefillGroup);
  const timing = await pair.run(prompts, newTokens, prefillGroup);
  const ms = decodeStepMs(timing);
  const round = (x: number) => Number(x.toFixed(1));
  console.log(
    JSON.stringify({
      streams,
      promptTokens,
      newTokens,
      glibcTunables: process.env.GLIBC_TUNABLES ?? null,
      nodeFlags: recommendedNodeFlagsIn(),
      tokensPerSecond: round(tokensPerSecond(timing)),
      decodeTokensPerSecond: round(decodeTokensPerSecond(timing)),
      decodeStepMs: { step: round(ms.step), expert: round(ms.expert), amateur: round(ms.amateur), summaries: round(ms.summary) },
    }),
  );
} finally {
  await pair.release();
}
