// The inputs the benchmark feeds the models: for the built-in pair, the method's real chat
// prompts over the built-in world's held-out problems (the expert answers and stops at EOS,
// as in sampling); for random-weight pairs, seeded random token ids of a fixed length (their
// output never ends early, so every stream runs its full token budget). The world's problems
// are generated into the cache from a seed, so a fresh clone needs nothing else.
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { TextTokenizer } from "#core/formats/tokenizer.ts";
import { SeededRandom } from "#core/math/random.ts";
import { readProblems } from "#core/tasks/problems.ts";
import { encodeChatPrompt } from "#trainer/sampling/prompt.ts";
import { buildWorldData } from "#world/build-data.ts";
import { writeWorldTokenizer } from "#world/tokenizer.ts";

export interface WorldFiles {
  dir: string;
  train: string;
  test: string;
  tokenizerDir: string;
}

/** The built-in world's problems (seed 1), written into `<cacheDir>/world` once. */
export function ensureWorld(cacheDir: string): WorldFiles {
  const dir = resolve(cacheDir, "world-seed1");
  const files = { dir, train: join(dir, "train.jsonl"), test: join(dir, "test.jsonl"), tokenizerDir: join(dir, "tokenizer") };
  if (!existsSync(files.test) || !existsSync(join(files.tokenizerDir, "tokenizer.json"))) {
    buildWorldData({ outDir: dir, trainCount: 2000, testCount: 200, seed: 1 });
    writeWorldTokenizer(files.tokenizerDir);
  }
  return files;
}

/** The first `count` test questions as the sampler's chat prompts, in the expert's token ids. */
export function worldPrompts(world: WorldFiles, expertDir: string, count: number): number[][] {
  const tokenizer = TextTokenizer.load(expertDir);
  const problems = readProblems(world.test).problems;
  return Array.from({ length: count }, (_, i) => encodeChatPrompt(tokenizer, problems[i % problems.length].question));
}

/**
 * `count` prompts of `length` random token ids, drawn above the special tokens (which the
 * synthetic tokenizer keeps at the lowest ids) so no prompt holds an EOS.
 */
export function randomPrompts(vocabSize: number, count: number, length: number, seed: number): number[][] {
  const rng = new SeededRandom(seed);
  const lowest = Math.min(256, vocabSize >> 1);
  return Array.from({ length: count }, () => Array.from({ length }, () => lowest + rng.int(vocabSize - lowest)));
}
