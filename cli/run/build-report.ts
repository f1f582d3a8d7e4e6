// Turns what a `lightreasoner run` measured into the report: the two finished runs as the
// trainer reports them (LightReasoner and the SFT baseline), their run directories (loss
// curves, the sample store with every step's KL), and the amateur's accuracy. Intervals are
// computed here from the per-problem verdicts, so report.json holds numbers a reader can
// check against each other.
import { join } from "node:path";
import { TextTokenizer } from "#core/formats/tokenizer.ts";
import type { EvaluationResult, Run } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import { RunStage, SamplingAdapter } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import { pairedDifferenceInterval, wilsonInterval } from "#core/math/accuracy.ts";
import type { ExampleTrajectory, MatchedSftResult, MethodResult, RoundResult, RunReport } from "#trainer/report/run-report.ts";
import { PUBLISHED_ANCHORS } from "#trainer/report/published.ts";
import { readRunRecord } from "#trainer/runs/run-record.ts";
import { SAMPLES_FILE } from "#trainer/runs/run-execution.ts";
import { SampleStore } from "#trainer/store/sample-store.ts";
import type { TrajectoryRecord } from "#trainer/store/records.ts";
import { stageName } from "./run-progress.ts";

export interface ReportInputs {
  lightreasoner: Run;
  sft: Run | null;
  /** LightReasoner's later rounds (2, 3, ...), each continuing the one before, where they ran. */
  laterRounds?: Run[];
  /** SFT baselines stopped at LightReasoner's tuned tokens and at its wall time, where they ran. */
  sftMatched?: { tokens: Run | null; time: Run | null };
  amateur: { name: string; correct: number; problems: number };
  expertName: string;
  expertDir: string;
  /** Most KL values kept for the histogram (an even subsample beyond it). */
  maxKlValues?: number;
  examples?: number;
}

type Pair = [number, number];

export function buildReport(inputs: ReportInputs): RunReport {
  const lr = inputs.lightreasoner;
  const before = evaluationOf(lr, RunStage.EVALUATING_BEFORE);
  const lrAfter = evaluationOf(lr, RunStage.EVALUATING_AFTER);
  const lrResult = methodResult(lr, before);
  const records = SampleStore.read(join(lr.runDir, SAMPLES_FILE)).records;
  const tokenizer = TextTokenizer.load(inputs.expertDir);
  const config = lr.config!;
  return {
    createdAt: new Date().toISOString(),
    expert: {
      name: inputs.expertName,
      fingerprint: lr.expertFingerprint,
      accuracyBefore: before.accuracy,
      accuracyBeforeCi95: wilson(before.correct, before.problems),
      accuracyAfter: lrAfter.accuracy,
      accuracyAfterCi95: lrResult.accuracyAfterCi95,
      accuracyDeltaCi95: lrResult.accuracyDeltaCi95,
    },
    amateur: { name: inputs.amateur.name, accuracy: inputs.amateur.correct / inputs.amateur.problems, accuracyCi95: wilson(inputs.amateur.correct, inputs.amateur.problems) },
    evalProblems: before.problems,
    lightreasoner: {
      ...lrResult,
      stepsSeen: lr.counters!.stepsSeen,
      stepsSelected: lr.counters!.stepsSelected,
      adapterVersions: readRunRecord(lr.runDir).adapters.map((a) => a.version),
    },
    sft: inputs.sft ? { ...methodResult(inputs.sft, evaluationOf(inputs.sft, RunStage.EVALUATING_BEFORE)), trajectoriesKept: inputs.sft.counters!.samplesStored } : null,
    sftMatched: inputs.sftMatched && (inputs.sftMatched.tokens || inputs.sftMatched.time)
      ? { tokens: inputs.sftMatched.tokens && matchedResult(inputs.sftMatched.tokens, lrAfter), time: inputs.sftMatched.time && matchedResult(inputs.sftMatched.time, lrAfter) }
      : undefined,
    rounds: inputs.laterRounds && inputs.laterRounds.length > 0 ? roundResults([lr, ...inputs.laterRounds], before) : undefined,
    published: PUBLISHED_ANCHORS,
    settings: {
      mode: config.mode === 2 ? "online" : "offline",
      beta: config.selection!.beta!,
      alpha: config.selection!.alpha!,
      temperature: config.sampling!.params!.temperature,
      maxNewTokens: config.sampling!.params!.maxNewTokens,
      learningRate: config.optimization!.learningRate!,
      batchSize: config.optimization!.batchSize!,
      gradientAccumulation: config.optimization!.gradientAccumulation!,
      maxSteps: config.optimization!.maxSteps!,
      pushEverySteps: config.optimization!.pushEverySteps!,
      samplingAdapter: config.sampling!.adapter === SamplingAdapter.LATEST_PUSHED ? "latest pushed" : "base",
      loraRank: config.lora!.rank!,
      loraAlpha: config.lora!.alpha!,
      loraTargets: config.lora!.targetModules.join(","),
      seed: config.seed!,
      sftMaxSteps: inputs.sft?.config?.optimization?.maxSteps ?? 0,
      sftLearningRate: inputs.sft?.config?.optimization?.learningRate ?? 0,
    },
    tfjsBackend: lr.tfjsBackend,
    trainingEngine: lr.trainingEngine,
    klValues: subsample(records.flatMap((r) => r.stepKls), inputs.maxKlValues ?? 20_000),
    examples: pickExamples(records, tokenizer, inputs.examples ?? 6),
  };
}

function evaluationOf(run: Run, stage: RunStage): EvaluationResult {
  const found = run.evaluations.find((e) => e.stage === stage);
  if (!found) throw new Error(`run ${run.runId} has no evaluation from the stage "${stageName(stage)}" (were eval problems given?)`);
  return found;
}

function wilson(correct: number, total: number): Pair {
  const ci = wilsonInterval(correct, total);
  return [ci.lower, ci.upper];
}

/** The cost the paper compares: producing the training data and training on it (sampling and training stages, summed over resumes). */
export function costSeconds(run: Run): number {
  const costStages = [RunStage.SAMPLING, RunStage.TRAINING, RunStage.SAMPLING_AND_TRAINING];
  return run.stageTimings.filter((t) => costStages.includes(t.stage)).reduce((sum, t) => sum + t.wallSeconds, 0);
}

/** An SFT baseline stopped at a budget, beside LightReasoner's evaluation after training on the same problems. */
function matchedResult(run: Run, lightreasonerAfter: EvaluationResult): MatchedSftResult {
  const result = methodResult(run, evaluationOf(run, RunStage.EVALUATING_BEFORE));
  const sft = run.config!.sft!;
  const versus = pairedDifferenceInterval(evaluationOf(run, RunStage.EVALUATING_AFTER).verdicts, lightreasonerAfter.verdicts);
  return {
    ...result,
    trajectoriesKept: run.counters!.samplesStored,
    budget: sft.maxTunedTokens ? { tunedTokens: sft.maxTunedTokens } : { wallSeconds: sft.maxWallSeconds! },
    lightreasonerMinusThisCi95: [versus.lower, versus.upper],
  };
}

/** Every round, each against the base expert and against the round before it (all on the same problems). */
function roundResults(rounds: Run[], base: EvaluationResult): RoundResult[] {
  let cumulative = 0;
  let previous = base;
  return rounds.map((run, i) => {
    const after = evaluationOf(run, RunStage.EVALUATING_AFTER);
    const delta = pairedDifferenceInterval(base.verdicts, after.verdicts);
    const step = pairedDifferenceInterval(previous.verdicts, after.verdicts);
    previous = after;
    const c = run.counters!;
    cumulative += c.tunedTokens;
    return {
      round: i + 1,
      accuracyAfter: after.accuracy,
      accuracyAfterCi95: wilson(after.correct, after.problems),
      accuracyDeltaCi95: [delta.lower, delta.upper],
      changeFromPreviousCi95: [step.lower, step.upper],
      stepsSeen: c.stepsSeen,
      stepsSelected: c.stepsSelected,
      tunedTokens: c.tunedTokens,
      cumulativeTunedTokens: cumulative,
      wallSeconds: costSeconds(run),
    };
  });
}

/** One method's outcome, its change measured pairwise against the same run's evaluation before training. */
function methodResult(run: Run, before: EvaluationResult): MethodResult {
  const after = evaluationOf(run, RunStage.EVALUATING_AFTER);
  const delta = pairedDifferenceInterval(before.verdicts, after.verdicts);
  const stageSeconds = Object.fromEntries(run.stageTimings.map((t) => [RunStage[t.stage].toLowerCase(), t.wallSeconds]));
  const c = run.counters!;
  return {
    accuracyAfter: after.accuracy,
    accuracyAfterCi95: wilson(after.correct, after.problems),
    accuracyDeltaCi95: [delta.lower, delta.upper],
    problemsSampled: c.problemsSampled,
    tunedTokens: c.tunedTokens,
    // Every pass over the data covers all of it before repeating, so the distinct positions
    // trained on are the passes' positions, capped at the data's size (steps_selected).
    distinctTunedTokens: Math.min(c.tunedTokens, c.stepsSelected),
    optimizerSteps: c.optimizerSteps,
    wallSeconds: costSeconds(run),
    gainPer1000TunedTokens: c.tunedTokens > 0 ? ((100 * (after.accuracy - before.accuracy)) / c.tunedTokens) * 1000 : 0,
    stageSeconds,
    loss: readRunRecord(run.runDir).losses,
  };
}

/** Every k-th value so at most `max` remain (the histogram's shape is kept). */
function subsample(values: number[], max: number): number[] {
  if (values.length <= max) return values;
  const stride = values.length / max;
  return Array.from({ length: max }, (_, i) => values[Math.floor(i * stride)]);
}

/** A few trajectories with selected steps, wrong answers first (where the method should act), each token shaded by its KL. */
function pickExamples(records: readonly TrajectoryRecord[], tokenizer: TextTokenizer, count: number): ExampleTrajectory[] {
  const withSelection = records.filter((r) => r.selected.length > 0 && r.stepKls.length === r.completionTokenIds.length);
  const wrong = withSelection.filter((r) => r.answer.correct === false);
  const right = withSelection.filter((r) => r.answer.correct !== false);
  const chosen = [...wrong.slice(0, Math.ceil(count / 2)), ...right].slice(0, count);
  return chosen.map((r) => {
    const selected = new Set(r.selected.map((s) => s.step));
    return {
      question: r.question,
      correct: r.answer.correct,
      tokens: r.completionTokenIds.map((id, step) => ({ text: tokenizer.decodeToken(id), kl: r.stepKls[step], selected: selected.has(step) })),
    };
  });
}
