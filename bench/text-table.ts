// Plain-text tables for the bench's printed output: the first column left-aligned, the
// figures right-aligned. A module of its own so a section can print a table without
// importing the whole report (table.ts reads BenchReport, which imports every section).
/** Columns padded to their widest cell: the first left-aligned, the rest right-aligned. */
export function renderTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i])))
      .join("  ")
      .trimEnd();
  return [line(headers), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}
