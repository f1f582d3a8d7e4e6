// `lightreasoner run` (what `npm start` runs): the whole method on one machine. It starts the
// inference and trainer services as separate processes on loopback ports, measures the
// amateur, runs LightReasoner (online by default) and then the rejection-sampling SFT
// baseline through TrainerService, shows each run's progress, stops both services, and
// writes report.json and report.html. Without --problems it uses the built-in world: the
// training problems are drawn past the ones the built-in pair was pretrained on, and the
// evaluation problems come from the world's test split.
import type { Command } from "commander";
import { InvalidArgumentError, Option } from "commander";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { create } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { createClient } from "#core/grpc/adapter.ts";
import { LrSchedule, RunConfigSchema, RunMode, SamplingAdapter, SelectionLabel, SftConfigSchema, TrainerService, TrainingMethod } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import type { Run, RunConfig } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import { readProblems } from "#core/tasks/problems.ts";
import { buildWorldData } from "#world/build-data.ts";
import { EndpointPool } from "#trainer/sampling/endpoint-pool.ts";
import { evaluate } from "#trainer/eval/evaluate.ts";
import { writeRunReport } from "#trainer/report/write-report.ts";
import type { RunReport } from "#trainer/report/run-report.ts";
import { buildReport, costSeconds } from "#cli/run/build-report.ts";
import { followRun } from "#cli/run/run-progress.ts";
import { startService } from "#cli/run/service-processes.ts";
import type { ServiceProcess } from "#cli/run/service-processes.ts";
import { printSummary } from "#cli/run/summary.ts";
import { parseIntegerOption, parseListOption, parseNumberOption, UsageError } from "#cli/options.ts";
import { TOKEN_ENV } from "#cli/security-flags.ts";
import { recommendedNodeFlagsIn } from "#inference/model/process-settings.ts";

/**
 * The default round's settings, chosen on the built-in world's validation split (never on
 * its test split); README "What the default run shows" gives the measurements behind them.
 */
export const RUN_DEFAULTS = {
  /** The built-in pair was pretrained on the world's first 20,000 training problems. */
  pretrainedProblems: 20_000,
  sample: 1000,
  /** 5,000 held-out problems: a paired 95% interval about ±0.6 points wide, narrower than the effect. */
  eval: 5000,
  beta: 0.4,
  /** Only near-ties of the expert enter the soft label; wider plausible sets gained less on validation. */
  alpha: 0.7,
  temperature: 0,
  maxNewTokens: 128,
  learningRate: 1e-3,
  steps: 300,
  batchSize: 8,
  gradientAccumulation: 2,
  /** Adapters reach the replicas at the end: sampling from mid-run adapters lost the gain on validation. */
  pushEvery: 0,
  /** Trajectories from the base expert; "latest" samples online from the run's latest pushed adapter. */
  samplingAdapter: "base",
  /** The contrastive soft label; "expert-argmax" is the ablation that trains toward the expert's own choice. */
  label: "contrastive",
  /** One round of LightReasoner; each further one samples with the last adapter and trains on from it. */
  rounds: 1,
  sftSample: 2000,
  sftAttempts: 4,
  sftTemperature: 1,
  sftSteps: 300,
  sftLearningRate: 1e-3,
  seed: 1,
} as const;

/** Every setting of a round: the command's flags, and what `lightreasoner experiment` resolves each row of a spec to. */
export interface RunFlags {
  expert: string;
  amateur: string;
  problems?: string;
  evalProblems?: string;
  sample: number;
  eval: number;
  mode: "online" | "offline";
  beta: number;
  alpha: number;
  temperature: number;
  maxNewTokens: number;
  lr: number;
  steps: number;
  batchSize: number;
  gradientAccumulation: number;
  pushEvery: number;
  samplingAdapter: "base" | "latest";
  label: "contrastive" | "expert-argmax";
  rounds: number;
  sft: boolean;
  sftSample: number;
  sftAttempts: number;
  sftTemperature: number;
  sftSteps: number;
  sftLr: number;
  /** SFT baselines stopped at LightReasoner's budget: its tuned tokens, its wall time, or both. */
  sftMatched: SftBudget[];
  seed: number;
  reportDir: string;
}

const D = RUN_DEFAULTS;

/** Each round samples and trains as long as the first; more than this is a typo, not an experiment. */
const MAX_ROUNDS = 10;

/** What a matched SFT baseline is stopped at: LightReasoner's tuned tokens or its sampling + training wall time. */
export const SFT_BUDGETS = ["tokens", "time"] as const;
export type SftBudget = (typeof SFT_BUDGETS)[number];

function parseSftBudgets(value: string): SftBudget[] {
  const budgets = parseListOption(value);
  for (const b of budgets) if (!(SFT_BUDGETS as readonly string[]).includes(b)) throw new InvalidArgumentError(`--sft-matched takes ${SFT_BUDGETS.join(", ")} (comma-separated), got "${b}"`);
  return [...new Set(budgets)] as SftBudget[];
}

export function registerRun(program: Command): void {
  program
    .command("run")
    .description("the whole method on this machine: inference + trainer services as processes, a LightReasoner round, the SFT baseline, report.json + report.html")
    .option("--expert <dir>", "expert model directory", "models/expert")
    .option("--amateur <dir>", "amateur model directory", "models/amateur")
    .option("--problems <file>", "training problems (JSON lines, GSM8K or prompt layout); default: the built-in world")
    .option("--eval-problems <file>", "held-out problems with answers; required with --problems")
    .option("--sample <n>", "problems to sample for LightReasoner", parseIntegerOption("--sample"), D.sample)
    .option("--eval <n>", "held-out problems to evaluate on", parseIntegerOption("--eval"), D.eval)
    .addOption(new Option("--mode <mode>", "LightReasoner's mode: online (sampling and training overlap) or offline").choices(["online", "offline"]).default("online"))
    .option("--beta <kl>", "keep steps whose KL(expert || amateur) is above this, nats", parseNumberOption("--beta"), D.beta)
    .option("--alpha <a>", "plausibility threshold of the contrastive soft label", parseNumberOption("--alpha"), D.alpha)
    .option("--temperature <t>", "sampling temperature of the expert's trajectories (0: greedy)", parseNumberOption("--temperature"), D.temperature)
    .option("--max-new-tokens <n>", "tokens per trajectory and per evaluation answer", parseIntegerOption("--max-new-tokens"), D.maxNewTokens)
    .option("--lr <rate>", "LightReasoner's peak learning rate", parseNumberOption("--lr"), D.learningRate)
    .option("--steps <n>", "LightReasoner's optimizer steps", parseIntegerOption("--steps"), D.steps)
    .option("--batch-size <n>", "samples per micro-batch", parseIntegerOption("--batch-size"), D.batchSize)
    .option("--gradient-accumulation <n>", "micro-batches per optimizer step", parseIntegerOption("--gradient-accumulation"), D.gradientAccumulation)
    .option("--push-every <n>", "online mode: push the adapter every n optimizer steps (0: once, when training ends)", parseIntegerOption("--push-every"), D.pushEvery)
    .addOption(new Option("--sampling-adapter <which>", "online mode: trajectories from the base expert, or from the run's latest pushed adapter").choices(["base", "latest"]).default(D.samplingAdapter))
    .addOption(new Option("--label <kind>", "what a selected step trains toward: the contrastive soft label, or the expert's argmax (an ablation)").choices(["contrastive", "expert-argmax"]).default(D.label))
    .option("--rounds <k>", "LightReasoner rounds: each after the first samples with the last round's adapter, selects again and trains on from it", parseIntegerOption("--rounds"), D.rounds)
    .option("--no-sft", "skip the SFT baseline")
    .option("--sft-sample <n>", "problems the SFT baseline samples", parseIntegerOption("--sft-sample"), D.sftSample)
    .option("--sft-attempts <n>", "trajectories the SFT baseline writes per problem until one is right", parseIntegerOption("--sft-attempts"), D.sftAttempts)
    .option("--sft-temperature <t>", "sampling temperature of the SFT baseline's attempts", parseNumberOption("--sft-temperature"), D.sftTemperature)
    .option("--sft-steps <n>", "SFT optimizer steps", parseIntegerOption("--sft-steps"), D.sftSteps)
    .option("--sft-lr <rate>", "SFT peak learning rate", parseNumberOption("--sft-lr"), D.sftLearningRate)
    .option("--sft-matched <budgets>", "also run SFT baselines stopped at LightReasoner's tuned tokens and/or its wall time (tokens,time; its first round's); online, so they sample only what they train on", parseSftBudgets, [])
    .option("--seed <n>", "seed of both runs", parseIntegerOption("--seed"), D.seed)
    .option("--report-dir <dir>", "where report.json, report.html and the runs go", `runs/${new Date().toISOString().replace(/[:.]/g, "-")}`)
    .action(async (flags: RunFlags) => {
      await runRound(flags);
    });
}

/** Where the problems come from: the user's files, or the built-in world written into the report directory. */
function problemSources(flags: RunFlags, reportDir: string): { train: { path: string; offset: number }; eval: { path: string } } {
  if (flags.problems || flags.evalProblems) {
    if (!flags.problems || !flags.evalProblems) throw new UsageError("give --problems and --eval-problems together (training problems and held-out problems)");
    for (const file of [flags.problems, flags.evalProblems]) if (!existsSync(file)) throw new UsageError(`no file at ${file}`);
    return { train: { path: resolve(flags.problems), offset: 0 }, eval: { path: resolve(flags.evalProblems) } };
  }
  const dir = join(reportDir, "world");
  // Each split is a stream of its own: problems past the pretraining set are new to both models.
  buildWorldData({ outDir: dir, trainCount: D.pretrainedProblems + Math.max(flags.sample, flags.sftSample), testCount: flags.eval, seed: 1 });
  const train = join(dir, "train.jsonl");
  // The offset is in lines; the world writes one problem per line from line 1.
  return { train: { path: train, offset: D.pretrainedProblems }, eval: { path: join(dir, "test.jsonl") } };
}

function runConfig(flags: RunFlags, method: "lightreasoner" | "sft", sources: ReturnType<typeof problemSources>, inference: string): MessageInitShape<typeof RunConfigSchema> {
  const lightreasoner = method === "lightreasoner";
  return {
    name: lightreasoner ? "LightReasoner" : "SFT baseline",
    mode: lightreasoner && flags.mode === "online" ? RunMode.ONLINE : RunMode.OFFLINE,
    method: lightreasoner ? TrainingMethod.LIGHTREASONER : TrainingMethod.SFT,
    problems: { path: sources.train.path, offset: sources.train.offset, limit: lightreasoner ? flags.sample : flags.sftSample },
    evalProblems: { path: sources.eval.path, limit: flags.eval },
    inferenceEndpoints: [inference],
    sampling: {
      params: { temperature: lightreasoner ? flags.temperature : flags.sftTemperature, maxNewTokens: flags.maxNewTokens },
      adapter: lightreasoner && flags.samplingAdapter === "latest" ? SamplingAdapter.LATEST_PUSHED : SamplingAdapter.BASE,
    },
    selection: { beta: flags.beta, alpha: flags.alpha, label: lightreasoner && flags.label === "expert-argmax" ? SelectionLabel.EXPERT_ARGMAX : SelectionLabel.CONTRASTIVE },
    sft: lightreasoner ? undefined : { attemptsPerProblem: flags.sftAttempts },
    optimization: {
      learningRate: lightreasoner ? flags.lr : flags.sftLr,
      maxSteps: lightreasoner ? flags.steps : flags.sftSteps,
      batchSize: flags.batchSize,
      gradientAccumulation: flags.gradientAccumulation,
      schedule: LrSchedule.LINEAR,
      pushEverySteps: flags.pushEvery,
    },
    seed: flags.seed,
  };
}

/**
 * The SFT baseline stopped at LightReasoner's budget: the tuned tokens it trained on, or the
 * wall time its sampling and training took. Online, so it samples only the problems it gets
 * to train on, and its clock runs from the start of sampling as LightReasoner's did.
 */
function matchedSftConfig(flags: RunFlags, sources: ReturnType<typeof problemSources>, inference: string, lightreasoner: Run, budget: SftBudget): RunConfig {
  const config = create(RunConfigSchema, runConfig(flags, "sft", sources, inference));
  const tokens = lightreasoner.counters!.tunedTokens;
  const seconds = costSeconds(lightreasoner);
  config.name = budget === "tokens" ? `SFT baseline, stopped at LightReasoner's ${tokens} tuned tokens` : `SFT baseline, stopped at LightReasoner's ${seconds.toFixed(1)} s`;
  config.mode = RunMode.ONLINE;
  config.sft = create(SftConfigSchema, { attemptsPerProblem: flags.sftAttempts, ...(budget === "tokens" ? { maxTunedTokens: tokens } : { maxWallSeconds: seconds }) });
  return config;
}

/** One round, start to finish; returns the report it wrote (report.json, report.html in flags.reportDir). */
export async function runRound(flags: RunFlags): Promise<RunReport> {
  for (const dir of [flags.expert, flags.amateur]) {
    if (!existsSync(join(dir, "config.json"))) throw new UsageError(`no model at ${dir} (the built-in pair is rebuilt by npm run models:build)`);
  }
  if (!(flags.rounds >= 1 && flags.rounds <= MAX_ROUNDS)) throw new UsageError(`--rounds must be 1 to ${MAX_ROUNDS}, got ${flags.rounds}`);
  if (flags.samplingAdapter === "latest" && flags.mode !== "online") throw new UsageError("--sampling-adapter latest needs --mode online: an offline run pushes its adapter only after sampling");
  const started = performance.now();
  const reportDir = resolve(flags.reportDir);
  mkdirSync(reportDir, { recursive: true });
  const sources = problemSources(flags, reportDir);
  const evalCount = Math.min(flags.eval, readProblems(sources.eval.path).problems.length);

  // A fresh token per round: the services accept mutating calls only from this process and
  // from each other (the trainer presents the same token to the inference service).
  const token = randomBytes(32).toString("base64url");
  const credential = { [TOKEN_ENV]: token };
  const services: ServiceProcess[] = [];
  // Interrupted (Ctrl-C, a supervisor's SIGTERM), Node would exit without the finally below and
  // leave both services running with their models loaded: stop them first, then exit as the signal asks.
  const interrupted = (signal: NodeJS.Signals) => {
    console.error(`\n${signal}: stopping the services`);
    void Promise.all(services.map((s) => s.stop().catch(() => undefined))).finally(() => process.exit(signal === "SIGINT" ? 130 : 143));
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);
  try {
    // The inference service gets the Node flags this process was started with (npm start's),
    // as its image starts it; the trainer's were never measured and it starts plainly.
    const inference = await startService("inference", ["inference", "--expert", flags.expert, "--amateur", flags.amateur, "--threads", "1"], credential, recommendedNodeFlagsIn());
    services.push(inference);
    const trainer = await startService("trainer", ["trainer", "--inference", inference.address, "--expert", flags.expert, "--runs-dir", join(reportDir, "trainer")], credential);
    services.push(trainer);
    console.log(`inference service pid ${inference.pid} on ${inference.address} (metrics :${inference.metricsPort}); trainer pid ${trainer.pid} on ${trainer.address} (metrics :${trainer.metricsPort})`);

    const amateur = await evaluateAmateur(inference.address, token, sources.eval.path, evalCount, flags.maxNewTokens);
    console.log(`amateur: greedy accuracy ${amateur.correct}/${amateur.problems} = ${((100 * amateur.correct) / amateur.problems).toFixed(1)}%`);

    const client = createClient(TrainerService, trainer.address, { security: { token } });
    let lightreasoner: Run;
    let sft: Run | null = null;
    const sftMatched: Record<SftBudget, Run | null> = { tokens: null, time: null };
    const laterRounds: Run[] = [];
    try {
      lightreasoner = await startAndFollow(client, "lightreasoner", runConfig(flags, "lightreasoner", sources, inference.address), "LightReasoner");
      for (let round = 2; round <= flags.rounds; round++) {
        const previous = laterRounds.at(-1) ?? lightreasoner;
        const config = { ...runConfig(flags, "lightreasoner", sources, inference.address), name: `LightReasoner, round ${round}`, startFromRun: previous.runId };
        laterRounds.push(await startAndFollow(client, `lightreasoner-round-${round}`, config, `LightReasoner round ${round}`));
      }
      if (flags.sft) sft = await startAndFollow(client, "sft-baseline", runConfig(flags, "sft", sources, inference.address), "SFT baseline");
      for (const budget of flags.sftMatched) {
        sftMatched[budget] = await startAndFollow(client, `sft-matched-${budget}`, matchedSftConfig(flags, sources, inference.address, lightreasoner, budget), `SFT (${budget})`);
      }
    } finally {
      client.close();
    }

    const report = buildReport({ lightreasoner, laterRounds, sft, sftMatched, amateur: { name: basename(resolve(flags.amateur)), ...amateur }, expertName: basename(resolve(flags.expert)), expertDir: flags.expert });
    // Read while the processes still exist: a peak over the whole run, both models or the expert and training included.
    report.servicePeakRssBytes = Object.fromEntries(services.map((s) => [s.name, s.peakRssBytes()]));
    for (const service of services.splice(0).reverse()) {
      const code = await service.stop();
      if (code !== 0) throw new Error(`${service.name} exited with code ${code} after SIGTERM`);
    }
    const files = writeRunReport(reportDir, report);
    printSummary(report);
    const peaks = Object.entries(report.servicePeakRssBytes).map(([name, bytes]) => `${name} ${bytes === null ? "unknown" : `${Math.round(bytes / 2 ** 20).toLocaleString("en-US")} MiB`}`);
    console.log(`\npeak resident memory: ${peaks.join(", ")}`);
    console.log(`\nreport: ${files.html}\n        ${files.json}\ndone in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    return report;
  } finally {
    await Promise.all(services.map((s) => s.stop().catch(() => undefined)));
    process.off("SIGINT", interrupted);
    process.off("SIGTERM", interrupted);
  }
}

async function startAndFollow(client: ReturnType<typeof createClient<(typeof TrainerService)["method"]>>, runId: string, config: MessageInitShape<typeof RunConfigSchema> | RunConfig, label: string): Promise<Run> {
  const { run } = await client.startRun({ runId, config });
  if (!run) throw new Error("StartRun returned no run");
  return followRun(client, run.runId, label);
}

async function evaluateAmateur(target: string, token: string, evalFile: string, count: number, maxNewTokens: number): Promise<{ correct: number; problems: number }> {
  const pool = await EndpointPool.connect({ targets: [target], security: { token } });
  try {
    const problems = readProblems(evalFile).problems.slice(0, count);
    const result = await evaluate({ pool, problems, mode: "amateur", maxNewTokens });
    return { correct: result.correct, problems: result.problems };
  } finally {
    pool.close();
  }
}
