// `lightreasoner experiment`: reruns rows of the README's table of experiments from the spec
// files in experiments/, each round through `lightreasoner run`'s own code, cached by a key of
// its inputs so a rerun skips what is done; `--table` prints the table from the cache.
import type { Command } from "commander";
import { readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseIntegerOption, parseListOption, UsageError } from "#cli/options.ts";
import { runExperiment } from "#cli/experiment/runner.ts";
import { loadSpec, SPECS_DIR, specPath } from "#cli/experiment/spec.ts";
import type { ExperimentSpec } from "#cli/experiment/spec.ts";
import { experimentTable } from "#cli/experiment/table.ts";

interface ExperimentFlags {
  onlyRow: string[];
  onlySeed: number[];
  results: string;
  table: boolean;
  dryRun: boolean;
}

export function registerExperiment(program: Command): void {
  program
    .command("experiment")
    .description("rerun rows of the README's table of experiments from experiments/<name>.json (cached: a rerun skips finished rounds), or print the table (--table)")
    .argument("[specs...]", "spec names (experiments/<name>.json) or paths to .json files; with --table, none means every spec")
    .option("--only-row <ids>", "only these rows of the spec (comma-separated ids)", parseListOption, [])
    .option("--only-seed <seeds>", "only these seeds (comma-separated)", (v: string) => parseListOption(v).map((s) => parseIntegerOption("--only-seed")(s)), [])
    .option("--results <dir>", "the results cache: one directory per finished round, named by its key", "runs/experiments")
    .option("--table", "print the markdown table of every row from the cache; runs nothing")
    .option("--dry-run", "list each round, its key and its `lightreasoner run` command line; runs nothing")
    .action(async (names: string[], flags: ExperimentFlags) => {
      // Specs and the models they name are the repository's, wherever the command is run from.
      const root = fileURLToPath(new URL("../..", import.meta.url)).replace(/\/$/, "");
      const resultsDir = resolve(flags.results);
      if (flags.table) {
        const specs = names.length > 0 ? names.map((n) => loadSpec(specPath(n, root))) : allSpecs(root);
        console.log(experimentTable(specs, { root, resultsDir }));
        return;
      }
      if (names.length === 0) throw new UsageError(`name a spec (${allSpecs(root).map((s) => s.name).join(", ")})`);
      const specs = names.map((n) => loadSpec(specPath(n, root)));
      if (flags.onlyRow.length > 0 && specs.length > 1) throw new UsageError("--only-row picks rows of one spec; name one");
      for (const spec of specs) {
        const tally = await runExperiment(spec, { root, resultsDir, onlyRows: flags.onlyRow, onlySeeds: flags.onlySeed, dryRun: flags.dryRun });
        console.log(`${spec.name}: ${tally.ran} run, ${tally.cached} cached, ${tally.skipped} not run`);
      }
    });
}

function allSpecs(root: string): ExperimentSpec[] {
  const dir = join(root, SPECS_DIR);
  return readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((f) => loadSpec(join(dir, f)));
}
