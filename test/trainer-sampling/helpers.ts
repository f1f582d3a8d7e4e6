// Shared pieces of the trainer's sampling integration tests: problems files, runs of the
// sampler against real inference servers on loopback (the tiny random expert/amateur pair the
// inference tests use), and the sample set of a store in a canonical order for comparisons.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { expect } from "vitest";
import { parseProblems } from "#core/tasks/problems.ts";
import type { Problem } from "#core/tasks/problems.ts";
import type { SamplerConfig } from "#trainer/sampling/config.ts";
import type { SamplingEvent } from "#trainer/sampling/sampler.ts";
import { sampleToStore } from "#trainer/sampling/sample-to-store.ts";
import type { SampleToStoreResult } from "#trainer/sampling/sample-to-store.ts";
import { SampleStore } from "#trainer/store/sample-store.ts";
import { recordSamples } from "#trainer/store/records.ts";
import type { SelectedSample, TrajectoryRecord } from "#trainer/store/records.ts";

export { writeTinyPair, startServer, silentLogger, sleep, eventually } from "#test/inference/helpers.ts";
export type { TinyPair } from "#test/inference/helpers.ts";

/** `count` prompt-layout problems "what is a + b?" with their answers, written to a file in `dir`. */
export function writeProblems(dir: string, count: number, offset = 0): { file: string; problems: Problem[] } {
  const lines: string[] = [];
  for (let i = offset; i < offset + count; i++) {
    const a = 3 + ((i * 7) % 40);
    const b = 5 + ((i * 11) % 30);
    lines.push(JSON.stringify({ prompt: `Question ${i}: what is ${a} + ${b}?`, answer: a + b }));
  }
  const file = join(dir, `problems-${offset}-${count}.jsonl`);
  writeFileSync(file, `${lines.join("\n")}\n`);
  return { file, problems: parseProblems(lines.join("\n"), file).problems };
}

/** Short sampled trajectories; beta 3.3 keeps about half the steps of the random pair (its KLs are large). */
export const BASE_CONFIG = { seed: 1234, temperature: 1, maxNewTokens: 24, concurrency: 4, beta: 3.3 } as const;

export interface RunOptions {
  targets: string[];
  storePath: string;
  problems: Problem[];
  config?: Partial<SamplerConfig>;
  expertDir?: string;
  onEvent?: (event: SamplingEvent) => void;
  signal?: AbortSignal;
  downForMs?: number;
}

/** Samples into a store through sampleToStore (the same path as the CLI and the service) and reads it back. */
export async function runSampling(o: RunOptions): Promise<{ summary: SampleToStoreResult; records: TrajectoryRecord[] }> {
  const summary = await sampleToStore({
    endpoints: { targets: o.targets, expertDir: o.expertDir, downForMs: o.downForMs ?? 300, connectTimeoutMs: 5000 },
    problems: o.problems,
    storePath: o.storePath,
    config: { ...BASE_CONFIG, ...o.config },
    onEvent: o.onEvent,
    signal: o.signal,
  });
  return { summary, records: SampleStore.read(o.storePath).records };
}

/** Every selected sample of a store, ordered by problem id then step: the run's sample set. */
export function sampleSet(records: Iterable<TrajectoryRecord>): SelectedSample[] {
  return [...records].sort((a, b) => (a.problemId < b.problemId ? -1 : a.problemId > b.problemId ? 1 : 0)).flatMap(recordSamples);
}

/** Records keyed by problem id (store order aside). */
export function byProblem(records: Iterable<TrajectoryRecord>): Map<string, TrajectoryRecord> {
  return new Map([...records].map((r) => [r.problemId, r]));
}

/**
 * How far a float of two equivalent runs may differ: ONNX Runtime's kernels may round rows of
 * a batch differently in the last bit, so a trajectory computed in another batch (another
 * endpoint count, concurrency or restart) carries the same tokens but log-probabilities that
 * differ by about 1e-7 on the tiny random pair and up to ~1e-5 on the trained built-in pair,
 * whose KLs are larger. Everything discrete must match exactly.
 */
export const FLOAT_TOLERANCE = 1e-5;
const RELATIVE_TOLERANCE = 1e-4;

const close = (x: number, y: number) => Math.abs(x - y) <= FLOAT_TOLERANCE + RELATIVE_TOLERANCE * Math.abs(y);

/** The same sample set: the same problems, steps, prefixes and plausible ids; KL and weights equal up to rounding. */
export function expectSameSamples(actual: Iterable<TrajectoryRecord>, expected: Iterable<TrajectoryRecord>): void {
  const a = sampleSet(actual);
  const b = sampleSet(expected);
  const discrete = (s: SelectedSample) => ({ problemId: s.problemId, step: s.step, position: s.position, prefixTokenIds: s.prefixTokenIds, ids: s.ids, adapterVersion: s.adapterVersion });
  expect(a.map(discrete)).toEqual(b.map(discrete));
  a.forEach((s, i) => {
    expect(close(s.kl, b[i].kl), `kl of ${s.problemId} step ${s.step}: ${s.kl} vs ${b[i].kl}`).toBe(true);
    s.weights.forEach((w, j) => expect(close(w, b[i].weights[j]), `weight ${j} of ${s.problemId} step ${s.step}: ${w} vs ${b[i].weights[j]}`).toBe(true));
  });
}
