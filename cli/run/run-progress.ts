// Shows a run as it happens, from its WatchRun events: on a terminal, a bar for sampling
// (problems) and one for training (optimizer steps) with the numbers a person watches (steps
// kept, loss); elsewhere (CI logs, pipes), one line per stage and per evaluation.
import cliProgress from "cli-progress";
import { RunStage, RunState } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import type { Run } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import { createClient } from "#core/grpc/adapter.ts";
import { TrainerService } from "#core/gen/lightreasoner/v1/trainer_pb.ts";

type TrainerClient = ReturnType<typeof createClient<(typeof TrainerService)["method"]>>;

const STAGE_NAMES: Record<RunStage, string> = {
  [RunStage.UNSPECIFIED]: "not started",
  [RunStage.PREPARING]: "preparing",
  [RunStage.EVALUATING_BEFORE]: "evaluating the expert before training",
  [RunStage.SAMPLING]: "sampling",
  [RunStage.TRAINING]: "training",
  [RunStage.SAMPLING_AND_TRAINING]: "sampling and training (online)",
  [RunStage.EVALUATING_AFTER]: "evaluating the expert after training",
  [RunStage.DONE]: "done",
};

export const stageName = (stage: RunStage) => STAGE_NAMES[stage] ?? `stage ${stage}`;
const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** Follows the run until it finishes; returns the finished run. Throws when it did not succeed. */
export async function followRun(client: TrainerClient, runId: string, label: string): Promise<Run> {
  const tty = process.stderr.isTTY === true;
  const say = (line: string) => (bars ? bars.log(`${line}\n`) : console.log(line));
  const bars = tty
    ? new cliProgress.MultiBar({ stream: process.stderr, hideCursor: true, clearOnComplete: false, format: `${label.padEnd(15)} {what} |{bar}| {value}/{total} {extra}` }, cliProgress.Presets.shades_classic)
    : null;
  let sampling: cliProgress.SingleBar | null = null;
  let training: cliProgress.SingleBar | null = null;
  let run: Run | undefined;
  try {
    for await (const { event } of client.watchRun({ runId })) {
      if (event.case === "snapshot") {
        const c = event.value.counters!;
        if (bars && c.problemsTotal > 0) sampling = bars.create(c.problemsTotal, c.problemsSampled, { what: "sample", extra: "" });
        if (bars) training = bars.create(c.optimizerStepsTotal, c.optimizerSteps, { what: "train ", extra: "" });
      } else if (event.case === "stageChanged") {
        say(`${label}: ${stageName(event.value.current)}`);
      } else if (event.case === "progress") {
        const c = event.value;
        sampling?.update(c.problemsSampled, { extra: `${c.stepsSelected}/${c.stepsSeen} steps kept, ${c.stepsPerSecond.toFixed(0)} steps/s` });
        training?.update(c.optimizerSteps, { extra: c.optimizerSteps > 0 ? `loss ${c.lastLoss.toFixed(4)}, ${c.tunedTokens} tuned tokens` : "" });
      } else if (event.case === "evaluation") {
        const e = event.value;
        say(`${label}: greedy accuracy ${e.stage === RunStage.EVALUATING_BEFORE ? "before" : "after"} training: ${e.correct}/${e.problems} = ${pct(e.accuracy)} (${e.reusedFromRun ? `the same measurement as run ${e.reusedFromRun}'s` : `${e.wallSeconds.toFixed(1)} s`})`);
      } else if (event.case === "adapterPushed" && !bars) {
        say(`${label}: adapter ${event.value.version} (step ${event.value.optimizerStep}) uploaded to ${event.value.endpoints.length} replica(s)`);
      } else if (event.case === "warning") {
        say(`${label}: warning: ${event.value.message}`);
      } else if (event.case === "finished") {
        run = event.value;
        break;
      }
    }
  } finally {
    bars?.stop();
  }
  if (!run) throw new Error(`the WatchRun stream of run ${runId} ended before the run finished`);
  if (run.state !== RunState.SUCCEEDED) throw new Error(`${label} run ${runId} ended ${RunState[run.state]}: ${run.error || "no error given"} (resume it with ResumeRun; its files are in ${run.runDir})`);
  return run;
}
