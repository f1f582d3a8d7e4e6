// `lightreasoner world-data`: the built-in task's problems (train, validation and test splits
// that share no problem) and its tokenizer, written from a seed.
import type { Command } from "commander";
import { join } from "node:path";
import { buildWorldData } from "#world/build-data.ts";
import { writeWorldTokenizer } from "#world/tokenizer.ts";
import { parseIntegerOption, parseNumberOption } from "#cli/options.ts";
import { DEFAULT_DIFFICULTY } from "#world/arithmetic.ts";

export function registerWorldData(program: Command): void {
  program
    .command("world-data")
    .description("write the built-in arithmetic world: train.jsonl, validation.jsonl, test.jsonl (GSM8K layout) and tokenizer/")
    .requiredOption("--out <dir>", "directory to write")
    .option("--train <n>", "training problems", parseIntegerOption("--train"), 20_000)
    .option("--validation <n>", "problems to tune settings on (0: no validation.jsonl)", parseIntegerOption("--validation"), 5_000)
    .option("--test <n>", "held-out problems", parseIntegerOption("--test"), 5_000)
    .option("--seed <n>", "generator seed", parseIntegerOption("--seed"), 1)
    // A world without the trap is what a plain-reading amateur is pretrained on (experiments/other-models.json).
    .option("--reversed-comparisons <share>", "share of more/fewer comparisons said from the known person's side, in [0, 1]", parseNumberOption("--reversed-comparisons"), DEFAULT_DIFFICULTY.reversedComparisons)
    .action((opts: { out: string; train: number; validation: number; test: number; seed: number; reversedComparisons: number }) => {
      const stats = buildWorldData({ outDir: opts.out, trainCount: opts.train, validationCount: opts.validation, testCount: opts.test, seed: opts.seed, difficulty: { reversedComparisons: opts.reversedComparisons } });
      writeWorldTokenizer(join(opts.out, "tokenizer"));
      console.log(JSON.stringify(stats, null, 2));
    });
}
