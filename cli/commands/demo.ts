// `lightreasoner demo`: one small LightReasoner round in a single process, on the built-in
// pair: the inference service on a loopback port, greedy accuracy of both models, sampling
// with KL selection, LoRA training on the selected steps, the adapter pushed back over
// gRPC, and the expert's accuracy again. It is the interim `npm start` until
// `lightreasoner run` (separate service processes, SFT baseline, report) exists; its
// settings are small and untuned, so it shows the pipeline working, not the method's gain.
import type { Command } from "commander";
import { existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { pino } from "pino";
import { buildWorldData } from "../../world/build-data.ts";
import { readProblems } from "../../core/tasks/problems.ts";
import { loadModelDir } from "../../core/formats/model-dir.ts";
import { pairedDifferenceInterval, wilsonInterval } from "../../core/math/accuracy.ts";
import { startInferenceServer } from "../../services/inference/src/main.ts";
import { EndpointPool } from "../../services/trainer/src/sampling/endpoint-pool.ts";
import { sampleToStore } from "../../services/trainer/src/sampling/sample-to-store.ts";
import { SampleStore } from "../../services/trainer/src/store/sample-store.ts";
import { evaluate } from "../../services/trainer/src/eval/evaluate.ts";
import { trainLora } from "../../services/trainer/src/training/lora-trainer.ts";
import { pushAdapter } from "../../services/trainer/src/adapter-push.ts";
import { parseIntegerOption, UsageError } from "../options.ts";

interface DemoFlags {
  expert: string;
  amateur: string;
  problems: number;
  evalProblems: number;
  steps: number;
  out: string;
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

export function registerDemo(program: Command): void {
  program
    .command("demo")
    .description("a small LightReasoner round in one process on the built-in pair (sample, select, train LoRA, push, re-evaluate)")
    .option("--expert <dir>", "expert model directory", "models/expert")
    .option("--amateur <dir>", "amateur model directory", "models/amateur")
    .option("--problems <n>", "training problems to sample", parseIntegerOption("--problems"), 200)
    .option("--eval-problems <n>", "held-out problems to evaluate on", parseIntegerOption("--eval-problems"), 500)
    .option("--steps <n>", "LoRA optimizer steps", parseIntegerOption("--steps"), 100)
    .option("--out <dir>", "where the world data, samples and adapter go", `runs/demo-${new Date().toISOString().replace(/[:.]/g, "-")}`)
    .action(async (flags: DemoFlags) => runDemo(flags));
}

async function runDemo(flags: DemoFlags): Promise<void> {
  for (const dir of [flags.expert, flags.amateur]) {
    if (!existsSync(join(dir, "config.json"))) throw new UsageError(`no model at ${dir}; build the built-in pair with npm run models:build`);
  }
  const out = resolve(flags.out);
  mkdirSync(out, { recursive: true });
  const say = (line: string) => console.log(line);
  const started = performance.now();

  // The world's splits are a function of the seed, so held-out problems never reach training.
  buildWorldData({ outDir: join(out, "world"), trainCount: flags.problems, testCount: flags.evalProblems, seed: 1 });
  const train = readProblems(join(out, "world", "train.jsonl")).problems;
  const test = readProblems(join(out, "world", "test.jsonl")).problems;

  const server = await startInferenceServer({
    expertDir: flags.expert,
    amateurDir: flags.amateur,
    host: "127.0.0.1",
    port: 0,
    metricsPort: 0,
    logger: pino({ level: "warn" }),
  });
  const target = `127.0.0.1:${server.port}`;
  say(`inference service on ${target} (metrics on :${server.metricsPort})`);
  const pool = await EndpointPool.connect({ targets: [target], expertDir: flags.expert });
  try {
    const amateur = await evaluate({ pool, problems: test, mode: "amateur" });
    const before = await evaluate({ pool, problems: test, mode: "expert" });
    say(`greedy accuracy on ${test.length} held-out problems: amateur ${pct(amateur.accuracy)}, expert ${pct(before.accuracy)}`);

    const storePath = join(out, "samples.jsonl");
    const sampling = await sampleToStore({ endpoints: { targets: [target], expertDir: flags.expert }, problems: train, storePath, config: { seed: 1 } });
    const { counts } = sampling;
    say(`sampled ${counts.problems} problems: ${counts.stepsSeen} steps, ${counts.stepsSelected} above beta (${pct(counts.stepsSelected / Math.max(counts.stepsSeen, 1))}) in ${sampling.wallSeconds.toFixed(1)} s`);

    const store = SampleStore.open(storePath);
    const trajectories = [...store.trajectories()].filter((t) => t.targets.length > 0);
    store.close();
    const { config, weights } = loadModelDir(flags.expert);
    const training = await trainLora({
      expert: { config, weights, source: flags.expert },
      trajectories,
      config: { maxSteps: flags.steps, learningRate: 1e-3, pushEverySteps: 0 },
      checkpointDir: join(out, "checkpoints"),
    });
    say(`trained LoRA for ${training.progress.step} steps on ${training.progress.tunedTokens} selected steps in ${training.wallSeconds.toFixed(1)} s (tfjs backend ${training.backend.kind})`);

    const version = await pushAdapter(target, training.adapter, { baseModel: flags.expert });

    const after = await evaluate({ pool, problems: test, mode: "expert" });
    const delta = pairedDifferenceInterval(before.perProblem, after.perProblem);
    const ciBefore = wilsonInterval(before.correct, test.length);
    say(`expert with adapter ${version}: ${pct(after.accuracy)} (before ${pct(before.accuracy)}, 95% [${pct(ciBefore.lower)}, ${pct(ciBefore.upper)}]); change ${(100 * delta.estimate).toFixed(1)} pts, 95% [${(100 * delta.lower).toFixed(1)}, ${(100 * delta.upper).toFixed(1)}]`);
    say(`done in ${((performance.now() - started) / 1000).toFixed(1)} s; samples and checkpoints in ${out}`);
  } finally {
    pool.close();
    await server.close(2000);
  }
}
