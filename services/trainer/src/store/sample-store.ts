// The append-only sample store: a JSON lines file with a settings header and one line per
// finished problem, appended and fsync'ed as each problem finishes. A problem is the atomic
// unit: it is either wholly on disk or not at all, so a process killed at any moment loses at
// most the problems in flight, and a restart re-samples exactly those (the reference's
// scripts wrote samples only at the very end, while already marking prompts done).
//
// Reopening reads every line, drops a torn last line (bytes after the final newline: the
// append the crash interrupted) by truncating the file, and reports which problems are done.
// One process writes a store at a time.
import { closeSync, existsSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { ModelFormatError } from "#core/model/errors.ts";
import { DuplicateProblemError, SampleFileError, StoreSettingsMismatchError } from "./errors.ts";
import { STORE_FORMAT_VERSION, issuePath, recordSamples, recordSftTrajectory, recordTrajectory, trajectoryRecordSchema } from "./records.ts";
import type { SelectedSample, TrainingTrajectory, TrajectoryRecord } from "./records.ts";

/** Settings that must not change between a run and its resumption (beta, alpha, seed, expert...). */
export type StoreSettings = Record<string, unknown>;

export interface StoreCounts {
  /** Problems stored. */
  problems: number;
  /** Trajectory steps received for the stored problems. */
  stepsSeen: number;
  /** Steps kept by the beta filter. */
  stepsSelected: number;
  /** Positions LightReasoner trains on: one per selected sample. */
  tunedTokens: number;
  /** Problems with a reference answer. */
  answered: number;
  /** Problems whose extracted answer matched the reference. */
  correct: number;
  /** Completion tokens of the correct trajectories: what rejection-sampling SFT trains on. */
  sftTokens: number;
}

/** What reopening found at the end of the file. */
export interface StoreRecovery {
  /** Bytes cut from the end of the file (a torn append), 0 when it ended cleanly. */
  truncatedBytes: number;
}

interface StoreContents {
  settings: StoreSettings | null;
  records: TrajectoryRecord[];
  /** Byte length of the complete lines; anything after it is a torn append. */
  completeBytes: number;
  totalBytes: number;
}

interface HeaderLine {
  v: typeof STORE_FORMAT_VERSION;
  kind: "header";
  settings: StoreSettings;
}

const NEWLINE = 0x0a;

export class SampleStore {
  private readonly records: TrajectoryRecord[];
  private readonly done = new Set<string>();
  private readonly listeners = new Set<(record: TrajectoryRecord) => void>();
  private readonly totals: StoreCounts = { problems: 0, stepsSeen: 0, stepsSelected: 0, tunedTokens: 0, answered: 0, correct: 0, sftTokens: 0 };
  private fd: number | null;

  private constructor(
    readonly path: string,
    fd: number,
    readonly settings: StoreSettings | null,
    records: TrajectoryRecord[],
    readonly recovery: StoreRecovery,
  ) {
    this.fd = fd;
    this.records = [];
    for (const record of records) this.remember(record);
  }

  /**
   * Opens (creating it when missing) the store at `path` for appending. With `settings`, a
   * new store records them in its header and an existing one must hold the same ones.
   */
  static open(path: string, options: { settings?: StoreSettings } = {}): SampleStore {
    mkdirSync(dirname(path), { recursive: true });
    const created = !existsSync(path);
    const fd = openSync(path, "a+");
    try {
      const contents = parseStore(readFileSync(path), path);
      let truncatedBytes = 0;
      if (contents.completeBytes < contents.totalBytes) {
        ftruncateSync(fd, contents.completeBytes);
        fsyncSync(fd);
        truncatedBytes = contents.totalBytes - contents.completeBytes;
      }
      let settings = contents.settings;
      if (options.settings !== undefined) {
        const wanted = canonicalSettings(options.settings);
        if (settings === null && contents.records.length === 0) {
          writeLine(fd, JSON.stringify({ v: STORE_FORMAT_VERSION, kind: "header", settings: wanted } satisfies HeaderLine));
          settings = wanted;
        } else {
          const differences = settingsDifferences(settings, wanted);
          if (differences.length > 0) throw new StoreSettingsMismatchError(path, differences);
        }
      }
      if (created) syncDirectory(dirname(path));
      return new SampleStore(path, fd, settings, contents.records, { truncatedBytes });
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /** Reads a store without writing to it; a torn last line is ignored, not truncated. */
  static read(path: string): { settings: StoreSettings | null; records: TrajectoryRecord[]; tornBytes: number } {
    let bytes: Buffer;
    try {
      bytes = readFileSync(path);
    } catch (err) {
      throw new ModelFormatError(path, `cannot read the sample store (${(err as Error).message})`);
    }
    const contents = parseStore(bytes, path);
    return { settings: contents.settings, records: contents.records, tornBytes: contents.totalBytes - contents.completeBytes };
  }

  /** Problem ids already stored: a resumed run skips exactly these. */
  doneProblemIds(): ReadonlySet<string> {
    return this.done;
  }

  has(problemId: string): boolean {
    return this.done.has(problemId);
  }

  /** Validates and appends one finished problem, then flushes it to disk before returning. */
  append(record: TrajectoryRecord): void {
    if (this.fd === null) throw new ModelFormatError(this.path, "the sample store is closed");
    const parsed = trajectoryRecordSchema.safeParse(record);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new SampleFileError(this.path, this.records.length + (this.settings ? 2 : 1), issuePath(issue.path) || null, `${issue.message} (refused; nothing was written)`);
    }
    if (this.done.has(record.problemId)) throw new DuplicateProblemError(this.path, record.problemId);
    // The schema's output has its keys in the schema's order: every line is laid out alike.
    const canonical = parsed.data as TrajectoryRecord;
    writeLine(this.fd, JSON.stringify(canonical));
    this.remember(canonical);
    for (const listener of this.listeners) listener(canonical);
  }

  /** Called with every record appended from now on; returns the unsubscribe function. */
  subscribe(listener: (record: TrajectoryRecord) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Every stored problem, in the order stored. */
  all(): readonly TrajectoryRecord[] {
    return this.records;
  }

  /** Every selected sample with its token-exact prefix. */
  *samples(): Generator<SelectedSample> {
    for (const record of this.records) yield* recordSamples(record);
  }

  /** The LightReasoner training units: one per problem with at least one selected step. */
  *trajectories(): Generator<TrainingTrajectory> {
    for (const record of this.records) {
      const trajectory = recordTrajectory(record);
      if (trajectory) yield trajectory;
    }
  }

  /** The rejection-sampling SFT units: the trajectories whose answer was right. */
  *sftTrajectories(): Generator<TrainingTrajectory> {
    for (const record of this.records) {
      const trajectory = recordSftTrajectory(record);
      if (trajectory) yield trajectory;
    }
  }

  counts(): StoreCounts {
    return { ...this.totals };
  }

  close(): void {
    if (this.fd === null) return;
    closeSync(this.fd);
    this.fd = null;
    this.listeners.clear();
  }

  private remember(record: TrajectoryRecord): void {
    this.records.push(record);
    this.done.add(record.problemId);
    const t = this.totals;
    t.problems++;
    t.stepsSeen += record.stepsSeen;
    t.stepsSelected += record.selected.length;
    t.tunedTokens += record.selected.length;
    if (record.answer.reference !== null) t.answered++;
    if (record.answer.correct === true) {
      t.correct++;
      t.sftTokens += record.completionTokenIds.length;
    }
  }
}

/** Writes one line and its newline in one append, then waits for the disk. */
function writeLine(fd: number, line: string): void {
  const bytes = Buffer.from(`${line}\n`, "utf8");
  let written = 0;
  while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written);
  fsyncSync(fd);
}

/** A new file's directory entry must reach the disk too, or the whole file can vanish. */
function syncDirectory(dir: string): void {
  let fd: number | null = null;
  try {
    fd = openSync(dir, "r");
    fsyncSync(fd);
  } catch {
    // Some file systems refuse fsync on a directory; the file's own fsync is what we can do.
  } finally {
    if (fd !== null) closeSync(fd);
  }
}

function parseStore(bytes: Buffer, file: string): StoreContents {
  const completeBytes = bytes.lastIndexOf(NEWLINE) + 1;
  const lines = bytes.subarray(0, completeBytes).toString("utf8").split("\n");
  lines.pop(); // the empty string after the final newline
  let settings: StoreSettings | null = null;
  const records: TrajectoryRecord[] = [];
  const seen = new Map<string, number>();
  lines.forEach((text, i) => {
    const line = i + 1;
    if (text.trim() === "") return;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new SampleFileError(file, line, null, `is not valid JSON (${(err as Error).message}); only the last line of a store can be torn`);
    }
    if (isHeader(value)) {
      if (settings !== null || records.length > 0) throw new SampleFileError(file, line, "kind", "a header may only be the first line");
      settings = value.settings;
      return;
    }
    const parsed = trajectoryRecordSchema.safeParse(value);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new SampleFileError(file, line, issuePath(issue.path) || null, issue.message);
    }
    const record = parsed.data as TrajectoryRecord;
    const earlier = seen.get(record.problemId);
    if (earlier !== undefined) throw new SampleFileError(file, line, "problemId", `${record.problemId} was already stored on line ${earlier}`);
    seen.set(record.problemId, line);
    records.push(record);
  });
  return { settings, records, completeBytes, totalBytes: bytes.length };
}

function isHeader(value: unknown): value is HeaderLine {
  const v = value as Partial<HeaderLine> | null;
  return typeof v === "object" && v !== null && v.kind === "header" && v.v === STORE_FORMAT_VERSION && typeof v.settings === "object" && v.settings !== null;
}

/** Settings as they read back from JSON (undefined entries dropped), so comparisons are fair. */
function canonicalSettings(settings: StoreSettings): StoreSettings {
  return JSON.parse(JSON.stringify(settings)) as StoreSettings;
}

function settingsDifferences(stored: StoreSettings | null, wanted: StoreSettings): string[] {
  if (stored === null) return ["the store has no settings header (it was written without settings)"];
  const keys = [...new Set([...Object.keys(stored), ...Object.keys(wanted)])].sort();
  const out: string[] = [];
  for (const key of keys) {
    const a = JSON.stringify(stored[key] ?? null);
    const b = JSON.stringify(wanted[key] ?? null);
    if (a !== b) out.push(`${key}: stored ${a}, now ${b}`);
  }
  return out;
}
