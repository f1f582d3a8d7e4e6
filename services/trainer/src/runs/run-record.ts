// What the trainer remembers about a run, in `<runs dir>/<run id>/run.json`: the resolved
// configuration, state and stage, counters, time per stage, evaluations, the adapters pushed.
// It is rewritten whole (temporary file, fsync, rename), so a crash leaves the old or the new
// version, never a mix; with the sample store and the training checkpoints beside it, it is
// everything a resumed run needs. The contract's Run message is drawn from it.
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { join } from "node:path";
import { create, fromJson, toJson } from "@bufbuild/protobuf";
import type { JsonValue } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { EvaluationResult, Run, RunConfig, RunCounters } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import { RunConfigSchema, RunSchema, RunStage, RunState } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import { ModelFormatError } from "#core/model/errors.ts";

export const RUN_FILE = "run.json";
/** 2: RunConfig.sampling's temperature, top_p, max_new_tokens and stop_strings moved into sampling.params. */
const RECORD_VERSION = 2;

export type RunStateName = "pending" | "running" | "succeeded" | "failed" | "cancelled";
export type RunStageName = "unspecified" | "preparing" | "evaluating_before" | "sampling" | "training" | "sampling_and_training" | "evaluating_after" | "done";

export const STATE_OF: Record<RunStateName, RunState> = {
  pending: RunState.PENDING,
  running: RunState.RUNNING,
  succeeded: RunState.SUCCEEDED,
  failed: RunState.FAILED,
  cancelled: RunState.CANCELLED,
};

export const STAGE_OF: Record<RunStageName, RunStage> = {
  unspecified: RunStage.UNSPECIFIED,
  preparing: RunStage.PREPARING,
  evaluating_before: RunStage.EVALUATING_BEFORE,
  sampling: RunStage.SAMPLING,
  training: RunStage.TRAINING,
  sampling_and_training: RunStage.SAMPLING_AND_TRAINING,
  evaluating_after: RunStage.EVALUATING_AFTER,
  done: RunStage.DONE,
};

/** The contract's RunCounters as plain JSON (run.json keeps them; Run.counters reports them). */
export type RunCountersRecord = Omit<RunCounters, "$typeName" | "$unknown">;

export interface EvaluationRecord {
  stage: "evaluating_before" | "evaluating_after";
  adapterVersion: string;
  problems: number;
  correct: number;
  accuracy: number;
  wallSeconds: number;
  verdicts: boolean[];
  /** What was measured (evaluationKey): equal keys, equal measurements. Absent in records written before it was kept. */
  key?: string;
  /** The run this evaluation was taken from instead of being run again. */
  reusedFromRun?: string;
}

export interface PushedAdapterRecord {
  version: string;
  optimizerStep: number;
  endpoints: string[];
  directory: string;
}

export interface RunRecord {
  v: typeof RECORD_VERSION;
  runId: string;
  /** The resolved RunConfig, in protobuf JSON. */
  config: JsonValue;
  state: RunStateName;
  stage: RunStageName;
  counters: RunCountersRecord;
  /** Seconds per stage, summed over resumes. */
  stageSeconds: Partial<Record<RunStageName, number>>;
  evaluations: EvaluationRecord[];
  adapters: PushedAdapterRecord[];
  /** Loss of every optimizer step, for the report's curve. */
  losses: { step: number; loss: number }[];
  liveAdapterVersion: string;
  /** Training finished and its final adapter is pushed: a resumed run goes straight to evaluation. */
  trainingDone: boolean;
  expertFingerprint: string;
  tfjsBackend: string;
  /** The LoRA gradient engine (gradient-engine.ts); absent in records written before it was kept. */
  trainingEngine?: string;
  error: string;
  createdAt: string;
  updatedAt: string;
}

export const zeroCounters = (): RunCountersRecord => ({
  problemsTotal: 0,
  problemsSampled: 0,
  stepsSeen: 0,
  stepsSelected: 0,
  samplesStored: 0,
  tunedTokens: 0,
  optimizerSteps: 0,
  optimizerStepsTotal: 0,
  adaptersPushed: 0,
  lastLoss: 0,
  stepsPerSecond: 0,
});

export function newRunRecord(runId: string, config: RunConfig, expertFingerprint: string, now = new Date()): RunRecord {
  return {
    v: RECORD_VERSION,
    runId,
    config: toJson(RunConfigSchema, config),
    state: "pending",
    stage: "unspecified",
    counters: zeroCounters(),
    stageSeconds: {},
    evaluations: [],
    adapters: [],
    losses: [],
    liveAdapterVersion: "",
    trainingDone: false,
    expertFingerprint,
    tfjsBackend: "",
    error: "",
    createdAt: now.toISOString(),
    updatedAt: now.toISOString(),
  };
}

export function runConfigOf(record: RunRecord): RunConfig {
  return fromJson(RunConfigSchema, record.config);
}

/** Writes run.json so that a crash at any moment leaves a complete file. */
export function writeRunRecord(runDir: string, record: RunRecord): void {
  mkdirSync(runDir, { recursive: true });
  const path = join(runDir, RUN_FILE);
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, "w");
  try {
    writeSync(fd, `${JSON.stringify(record, null, 2)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

export function readRunRecord(runDir: string): RunRecord {
  const path = join(runDir, RUN_FILE);
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new ModelFormatError(path, `cannot read the run record: ${(err as Error).message}`);
  }
  const record = upgradeRecord(parsed) as Partial<RunRecord>;
  if (record?.v !== RECORD_VERSION || typeof record.runId !== "string" || typeof record.state !== "string" || record.state in STATE_OF === false) {
    throw new ModelFormatError(path, `not a version ${RECORD_VERSION} run record`);
  }
  return record as RunRecord;
}

/** Brings a version 1 record to version 2, so runs written before the contract change still resume with their settings. */
function upgradeRecord(parsed: unknown): unknown {
  const record = parsed as { v?: unknown; config?: { sampling?: Record<string, unknown> } } | null;
  if (record?.v !== 1) return parsed;
  const sampling = record.config?.sampling;
  if (sampling) {
    const params: Record<string, unknown> = {};
    for (const key of ["temperature", "topP", "maxNewTokens", "stopStrings"]) {
      if (key in sampling) params[key] = sampling[key];
      delete sampling[key];
    }
    sampling.params = params;
  }
  return { ...record, v: RECORD_VERSION };
}

export function evaluationMessage(e: EvaluationRecord): Omit<EvaluationResult, "$typeName"> {
  return { stage: STAGE_OF[e.stage], adapterVersion: e.adapterVersion, problems: e.problems, correct: e.correct, accuracy: e.accuracy, wallSeconds: e.wallSeconds, verdicts: e.verdicts, reusedFromRun: e.reusedFromRun ?? "" };
}

/** The contract's view of a run. */
export function runMessage(record: RunRecord, runDir: string): Run {
  return create(RunSchema, {
    runId: record.runId,
    config: runConfigOf(record),
    state: STATE_OF[record.state],
    stage: STAGE_OF[record.stage],
    counters: record.counters,
    stageTimings: Object.entries(record.stageSeconds).map(([stage, wallSeconds]) => ({ stage: STAGE_OF[stage as RunStageName], wallSeconds })),
    evaluations: record.evaluations.map(evaluationMessage),
    liveAdapterVersion: record.liveAdapterVersion,
    expertFingerprint: record.expertFingerprint,
    tfjsBackend: record.tfjsBackend,
    trainingEngine: record.trainingEngine ?? "",
    runDir,
    error: record.error,
    createdAt: timestampFromDate(new Date(record.createdAt)),
    updatedAt: timestampFromDate(new Date(record.updatedAt)),
  });
}
