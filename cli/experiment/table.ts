// The README's table of experiments, drawn from the results cache: one line per spec row,
// each cell the change in greedy accuracy of the row's measured method with its paired 95%
// interval, variants and seeds side by side (" / "). A round not run yet says so, so the
// table is never filled in by hand.
import { ResultCache } from "./results.ts";
import type { PlannedRun } from "./runner.ts";
import { plannedRuns, prepareRun } from "./runner.ts";
import type { ExperimentSpec } from "./spec.ts";
import { changeCell } from "./cells.ts";

export interface TableOptions {
  root: string;
  resultsDir: string;
}

/** The markdown table of every row of `specs` (in their order), from what the cache holds. */
export function experimentTable(specs: readonly ExperimentSpec[], options: TableOptions): string {
  const cache = new ResultCache(options.resultsDir);
  const lines = ["| experiment | change (points) | before these specs (README, scratch script) |", "|---|---|---|"];
  for (const spec of [...specs].sort((a, b) => a.order - b.order)) {
    for (const row of spec.rows) {
      const runs = plannedRuns(spec, [row.id]);
      const cells = row.notReproducible ? [`not reproducible yet: ${row.notReproducible}`] : runs.map((run) => cellOf(run, cache, options));
      const label = spec.frozenDefault ? `${row.label} (test split)` : row.label;
      lines.push(`| ${label} | ${cells.join(" / ")} | ${row.previously ?? ""} |`);
    }
  }
  return lines.join("\n");
}

function cellOf(run: PlannedRun, cache: ResultCache, options: TableOptions): string {
  // Nothing is built or run for the table: a model still to be built means the round has not run.
  const prepared = prepareRun(run, { root: options.root, resultsDir: options.resultsDir, build: false });
  const found = prepared && cache.find(prepared.key);
  return found ? changeCell(found.report, run.row.measure) : "not run";
}
