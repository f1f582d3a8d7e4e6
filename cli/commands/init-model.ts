// `lightreasoner init-model`: a complete random-weight model directory of any shape.
import type { Command } from "commander";
import { readFileSync } from "node:fs";
import { initModel } from "#core/model/init-model.ts";
import { parseIntegerOption } from "#cli/options.ts";

export function registerInitModel(program: Command): void {
  program
    .command("init-model")
    .description("write a random-weight Hugging Face model directory (config, safetensors, tokenizer) from a config.json")
    .requiredOption("--config <file>", "config.json with model_type llama or qwen2 and the shape fields")
    .requiredOption("--out <dir>", "directory to write")
    .option("--seed <n>", "random seed for the weights", parseIntegerOption("--seed"), 0)
    .action(async (opts: { config: string; out: string; seed: number }) => {
      const started = performance.now();
      const configJson = JSON.parse(readFileSync(opts.config, "utf8"));
      await initModel({ configJson, seed: opts.seed, outDir: opts.out });
      console.log(`wrote ${opts.out} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    });
}
