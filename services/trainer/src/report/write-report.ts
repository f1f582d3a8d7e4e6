// Writes a round's report into its directory: report.json (the RunReport as is) and
// report.html (drawn from it). Apart from the RunReport types, so that the page renderer
// imports the types without importing the module that calls it (no import circle).
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { renderReportHtml } from "./report-html.ts";
import type { RunReport } from "./run-report.ts";

/** Writes report.json and report.html into `dir` (each via a temporary file, then renamed). */
export function writeRunReport(dir: string, report: RunReport): { json: string; html: string } {
  mkdirSync(dir, { recursive: true });
  const json = join(dir, "report.json");
  const html = join(dir, "report.html");
  writeFileSync(`${json}.tmp`, `${JSON.stringify(report, null, 2)}\n`);
  renameSync(`${json}.tmp`, json);
  writeFileSync(`${html}.tmp`, renderReportHtml(report));
  renameSync(`${html}.tmp`, html);
  return { json, html };
}
