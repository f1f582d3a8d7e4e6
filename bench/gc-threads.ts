// What V8's garbage-collector helper threads cost the model steps: the amateur section's
// lockstep scoring (the amateur alone, a batch of 64-token prompts and 128-token continuations,
// bench/amateur.ts scoreTrajectories) in child processes started without and with
// RECOMMENDED_NODE_FLAGS, alternated round by round so that both see the same machine. One
// bench run times each way once, and this machine's runs scatter by more than the difference;
// here the medians of several rounds are compared.
//   npx tsx bench/gc-threads.ts <amateurDir> [--rounds 4] [--streams 16] [--prompt 64] [--new 128]
import { fileURLToPath } from "node:url";
import { RECOMMENDED_NODE_FLAGS } from "#inference/model/process-settings.ts";
import { scoreTrajectories } from "./amateur.ts";
import { openServedSession } from "./engine-lockstep.ts";
import { runScriptChild } from "./processes.ts";
import { positiveInteger } from "./script-option.ts";
import { BenchInputError, median } from "./stats.ts";
import { randomPrompts } from "./workloads.ts";

const args = process.argv.slice(2);
const dir = args[0];
if (!dir || dir.startsWith("--")) throw new BenchInputError("amateurDir", "usage: gc-threads.ts <amateurDir> [--rounds 4] [--streams 16] [--prompt 64] [--new 128]");
const rounds = positiveInteger(args, "--rounds", 4);
const streams = positiveInteger(args, "--streams", 16);
const promptTokens = positiveInteger(args, "--prompt", 64);
const newTokens = positiveInteger(args, "--new", 128);

/** Seconds for one lockstep pass over the batch, after a two-token warm-up. */
async function lockstepSeconds(): Promise<number> {
  const amateur = await openServedSession(dir, "amateur");
  try {
    const vocab = amateur.io.vocabSize;
    if (vocab === null) throw new BenchInputError("amateurDir", `${dir}: the graph does not say its vocabulary size`);
    const prompts = randomPrompts(vocab, streams, promptTokens, 23);
    const continuations = randomPrompts(vocab, streams, newTokens, 29);
    await scoreTrajectories(amateur, prompts, continuations.map((c) => c.slice(0, 2)), "lockstep");
    return await scoreTrajectories(amateur, prompts, continuations, "lockstep");
  } finally {
    await amateur.release();
  }
}

if (args.includes("--child")) {
  console.log(JSON.stringify({ seconds: await lockstepSeconds() }));
} else {
  const self = fileURLToPath(import.meta.url);
  // The flags under test come only from here, whatever this process was started with.
  const timed = (nodeFlags: readonly string[]) => runScriptChild<{ seconds: number }>(self, args, { nodeFlags }).seconds;
  const without: number[] = [];
  const withFlags: number[] = [];
  for (let r = 0; r < rounds; r++) {
    without.push(timed([]));
    withFlags.push(timed(RECOMMENDED_NODE_FLAGS));
    console.log(`round ${r + 1}: ${without[r].toFixed(2)} s without, ${withFlags[r].toFixed(2)} s with ${RECOMMENDED_NODE_FLAGS.join(" ")}`);
  }
  const a = median(without);
  const b = median(withFlags);
  console.log(`lockstep, ${streams} streams of ${promptTokens} + ${newTokens} tokens, median of ${rounds} (GLIBC_TUNABLES ${process.env.GLIBC_TUNABLES ?? "unset"}):`);
  console.log(`  without: ${a.toFixed(2)} s (${Math.min(...without).toFixed(2)}-${Math.max(...without).toFixed(2)})`);
  console.log(`  with ${RECOMMENDED_NODE_FLAGS.join(" ")}: ${b.toFixed(2)} s (${Math.min(...withFlags).toFixed(2)}-${Math.max(...withFlags).toFixed(2)}), ${(a / b).toFixed(2)}x`);
}
