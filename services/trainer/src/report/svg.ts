// Minimal SVG chart pieces for the self-contained report: no chart library, because the
// report must open offline from a single file and needs only bars, lines and a histogram.

export const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const fmt = (x: number) => (Number.isInteger(x) || Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 1 ? x.toFixed(2) : x.toPrecision(2));

export interface Frame {
  width: number;
  height: number;
  left: number;
  bottom: number;
  top: number;
  right: number;
}

const FRAME: Frame = { width: 560, height: 240, left: 48, bottom: 36, top: 16, right: 16 };

function scale(domain: [number, number], range: [number, number]) {
  const [d0, d1] = domain;
  const span = d1 - d0 || 1;
  return (x: number) => range[0] + ((x - d0) / span) * (range[1] - range[0]);
}

function axes(f: Frame, xLabel: string, yLabel: string, yTicks: number[], y: (v: number) => number): string {
  const ticks = yTicks
    .map((t) => `<line x1="${f.left - 4}" x2="${f.width - f.right}" y1="${y(t)}" y2="${y(t)}" class="grid"/><text x="${f.left - 6}" y="${y(t) + 4}" text-anchor="end">${fmt(t)}</text>`)
    .join("");
  return (
    ticks +
    `<line x1="${f.left}" x2="${f.left}" y1="${f.top}" y2="${f.height - f.bottom}" class="axis"/>` +
    `<line x1="${f.left}" x2="${f.width - f.right}" y1="${f.height - f.bottom}" y2="${f.height - f.bottom}" class="axis"/>` +
    `<text x="${(f.left + f.width - f.right) / 2}" y="${f.height - 4}" text-anchor="middle">${escapeHtml(xLabel)}</text>` +
    `<text x="12" y="${(f.top + f.height - f.bottom) / 2}" text-anchor="middle" transform="rotate(-90 12 ${(f.top + f.height - f.bottom) / 2})">${escapeHtml(yLabel)}</text>`
  );
}

function niceTicks(max: number, count = 4): number[] {
  if (!(max > 0)) return [0];
  const step = 10 ** Math.floor(Math.log10(max / count));
  const unit = [1, 2, 5, 10].map((m) => m * step).find((s) => max / s <= count) ?? step * 10;
  return Array.from({ length: Math.floor(max / unit) + 1 }, (_, i) => i * unit);
}

export interface Bar {
  label: string;
  value: number;
  interval?: [number, number];
  color: string;
}

/** Vertical bars with optional error whiskers; values in [0, yMax]. */
export function barChart(bars: Bar[], yLabel: string, yMax = Math.max(...bars.map((b) => b.interval?.[1] ?? b.value)) * 1.15 || 1): string {
  const f = FRAME;
  const y = scale([0, yMax], [f.height - f.bottom, f.top]);
  const slot = (f.width - f.left - f.right) / bars.length;
  const body = bars
    .map((b, i) => {
      const x = f.left + i * slot + slot * 0.2;
      const w = slot * 0.6;
      const whisker = b.interval
        ? `<line x1="${x + w / 2}" x2="${x + w / 2}" y1="${y(b.interval[0])}" y2="${y(b.interval[1])}" class="whisker"/>` +
          `<line x1="${x + w / 2 - 6}" x2="${x + w / 2 + 6}" y1="${y(b.interval[0])}" y2="${y(b.interval[0])}" class="whisker"/>` +
          `<line x1="${x + w / 2 - 6}" x2="${x + w / 2 + 6}" y1="${y(b.interval[1])}" y2="${y(b.interval[1])}" class="whisker"/>`
        : "";
      return (
        `<rect x="${x}" y="${y(b.value)}" width="${w}" height="${y(0) - y(b.value)}" fill="${b.color}"><title>${escapeHtml(b.label)}: ${fmt(b.value)}</title></rect>${whisker}` +
        `<text x="${x + w / 2}" y="${y(b.value) - 6}" text-anchor="middle" class="value">${fmt(b.value)}</text>` +
        `<text x="${x + w / 2}" y="${f.height - f.bottom + 14}" text-anchor="middle">${escapeHtml(b.label)}</text>`
      );
    })
    .join("");
  return `<svg viewBox="0 0 ${f.width} ${f.height}" class="chart">${axes(f, "", yLabel, niceTicks(yMax), y)}${body}</svg>`;
}

/** Histogram of `values` with a vertical marker (the beta threshold). */
export function histogram(values: number[], marker: { at: number; label: string }, xLabel: string, bins = 40): string {
  const f = FRAME;
  const sorted = [...values].sort((a, b) => a - b);
  const xMax = Math.max(marker.at * 1.5, sorted[Math.floor(sorted.length * 0.99)] ?? 1) || 1;
  const counts = new Array<number>(bins).fill(0);
  for (const v of values) counts[Math.min(bins - 1, Math.floor((v / xMax) * bins))]++;
  const yMax = Math.max(...counts, 1);
  const x = scale([0, xMax], [f.left, f.width - f.right]);
  const y = scale([0, yMax], [f.height - f.bottom, f.top]);
  const w = (f.width - f.left - f.right) / bins;
  const bars = counts
    .map((c, i) => {
      const lo = (i / bins) * xMax;
      const cls = lo >= marker.at ? "kept" : "dropped";
      return `<rect x="${x(lo)}" y="${y(c)}" width="${Math.max(w - 1, 1)}" height="${y(0) - y(c)}" class="${cls}"><title>${fmt(lo)}–${fmt(lo + xMax / bins)}: ${c}</title></rect>`;
    })
    .join("");
  const xTicks = niceTicks(xMax, 6)
    .map((t) => `<text x="${x(t)}" y="${f.height - f.bottom + 14}" text-anchor="middle">${fmt(t)}</text>`)
    .join("");
  const line = `<line x1="${x(marker.at)}" x2="${x(marker.at)}" y1="${f.top}" y2="${f.height - f.bottom}" class="marker"/><text x="${x(marker.at) + 4}" y="${f.top + 12}" class="marker-label">${escapeHtml(marker.label)}</text>`;
  return `<svg viewBox="0 0 ${f.width} ${f.height}" class="chart">${axes(f, xLabel, "steps", niceTicks(yMax), y)}${bars}${xTicks}${line}</svg>`;
}

export interface Series {
  label: string;
  color: string;
  points: { x: number; y: number }[];
}

/** Line chart of one or more series sharing axes. */
export function lineChart(series: Series[], xLabel: string, yLabel: string): string {
  const f = FRAME;
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return `<p class="empty">no points</p>`;
  const xMax = Math.max(...all.map((p) => p.x), 1);
  const yMax = Math.max(...all.map((p) => p.y)) * 1.1 || 1;
  const x = scale([0, xMax], [f.left, f.width - f.right]);
  const y = scale([0, yMax], [f.height - f.bottom, f.top]);
  const paths = series
    .map((s, i) => {
      const d = s.points.map((p, j) => `${j ? "L" : "M"}${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`).join("");
      return `<path d="${d}" stroke="${s.color}" class="series"/><text x="${f.width - f.right - 4}" y="${f.top + 14 + 14 * i}" text-anchor="end" fill="${s.color}">${escapeHtml(s.label)}</text>`;
    })
    .join("");
  const xTicks = niceTicks(xMax, 6)
    .map((t) => `<text x="${x(t)}" y="${f.height - f.bottom + 14}" text-anchor="middle">${fmt(t)}</text>`)
    .join("");
  return `<svg viewBox="0 0 ${f.width} ${f.height}" class="chart">${axes(f, xLabel, yLabel, niceTicks(yMax), y)}${xTicks}${paths}</svg>`;
}
