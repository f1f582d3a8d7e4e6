// The results cache of `lightreasoner experiment`: each finished run's report, in a directory
// named by a hash of everything that decides its outcome (the resolved settings and seed, the
// models' content fingerprints, the problems' bytes). A rerun finds a finished run there and
// skips it; a run that was interrupted left no record, so its directory is cleared and the
// run starts again. Code changes do not change the key: a run is rerun after one by
// deleting its directory (or the results directory).
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { RunReport } from "#trainer/report/run-report.ts";

/** What decides a run's outcome; two runs with equal inputs give the same report (README: the run repeats). */
export interface RunInputs {
  /** Every `lightreasoner run` setting, resolved (defaults filled in), the seed included. */
  settings: Record<string, string | number | boolean | readonly string[]>;
  /** modelFingerprint of each model directory. */
  models: { expert: string; amateur: string };
  /** sha256 of each problems file's bytes. */
  problems: { train: string; eval: string };
}

/** Bump when the meaning of the inputs changes, so old results are not mistaken for new ones. */
const KEY_VERSION = 1;

/** JSON with object keys sorted at every level, so equal values always give equal text. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  if (typeof value === "number" && !Number.isFinite(value)) throw new Error(`cannot key a non-finite number (${value})`);
  return JSON.stringify(value);
}

/** The run's key: sha256 (hex) of the canonical JSON of its inputs and the key version. */
export function runKey(inputs: RunInputs): string {
  return createHash("sha256").update(canonicalJson({ keyVersion: KEY_VERSION, ...inputs })).digest("hex");
}

export const sha256OfFile = (path: string): string => createHash("sha256").update(readFileSync(path)).digest("hex");

/** What the cache keeps beside each report: where the run came from and what it cost. */
export interface RunRecordOfExperiment {
  key: string;
  spec: string;
  row: string;
  variant: number;
  seed: number;
  inputs: RunInputs;
  /** The `lightreasoner run` command line the run is equivalent to. */
  command: string;
  finishedAt: string;
  wallSeconds: number;
}

const RECORD_FILE = "experiment.json";
const REPORT_FILE = "report.json";

export class ResultCache {
  constructor(readonly dir: string) {}

  /** The run's directory: the first 16 hex digits of its key (64 bits). */
  runDir(key: string): string {
    return join(this.dir, key.slice(0, 16));
  }

  /** The finished run with this key, or null; a directory with another key's record is an error, not a hit. */
  find(key: string): { record: RunRecordOfExperiment; report: RunReport } | null {
    const dir = this.runDir(key);
    const recordFile = join(dir, RECORD_FILE);
    if (!existsSync(recordFile)) return null;
    const record = JSON.parse(readFileSync(recordFile, "utf8")) as RunRecordOfExperiment;
    if (record.key !== key) throw new Error(`${recordFile} holds key ${record.key}, not ${key}: two keys share 64 bits; move one aside`);
    return { record, report: JSON.parse(readFileSync(join(dir, REPORT_FILE), "utf8")) as RunReport };
  }

  /** An empty directory for a run about to start: whatever an interrupted attempt left is removed. */
  begin(key: string): string {
    const dir = this.runDir(key);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    return dir;
  }

  /** Marks the run finished: written last, so only a complete run is ever found. */
  finish(record: RunRecordOfExperiment): void {
    const dir = this.runDir(record.key);
    if (!existsSync(join(dir, REPORT_FILE))) throw new Error(`${dir} has no ${REPORT_FILE}; the run did not finish`);
    const tmp = join(dir, `${RECORD_FILE}.tmp`);
    writeFileSync(tmp, `${JSON.stringify(record, null, 2)}\n`);
    // rename is atomic: a crash leaves either no record or the whole of it.
    renameSync(tmp, join(dir, RECORD_FILE));
  }
}
