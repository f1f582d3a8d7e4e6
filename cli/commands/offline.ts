// The trainer's offline stages as separate commands, the paper's way of working: `sample`
// fills a sample store from inference endpoints, `train` turns a store into a PEFT adapter
// (and can push it), `eval` measures greedy accuracy through the endpoints. Each only parses
// flags; the work is the same library code the trainer service uses.
import type { Command } from "commander";
import { writeFileSync } from "node:fs";
import { readProblems } from "#core/tasks/problems.ts";
import { loadModelDir } from "#core/formats/model-dir.ts";
import { writePeftAdapter } from "#core/formats/peft.ts";
import { wilsonInterval } from "#core/math/accuracy.ts";
import { sampleToStore } from "#trainer/sampling/sample-to-store.ts";
import { EndpointPool } from "#trainer/sampling/endpoint-pool.ts";
import { SampleStore } from "#trainer/store/sample-store.ts";
import { importPaperSamples, readPaperSamples } from "#trainer/store/paper-format.ts";
import { recordTrajectory } from "#trainer/store/records.ts";
import { trainingSet } from "#trainer/store/training-set.ts";
import type { TrainingTrajectory } from "#trainer/store/records.ts";
import { TextTokenizer } from "#core/formats/tokenizer.ts";
import { evaluate } from "#trainer/eval/evaluate.ts";
import { trainLora } from "#trainer/training/lora-trainer.ts";
import { pushAdapter } from "#trainer/adapter-push.ts";
import { parseIntegerOption, parseListOption, parseNumberOption, UsageError } from "#cli/options.ts";
import { addClientSecurityOptions, clientSecurity, readToken } from "#cli/security-flags.ts";
import type { ClientSecurityFlags } from "#cli/security-flags.ts";

const targets = parseListOption;

const endpointSecurity = (command: Command) => addClientSecurityOptions(command, { what: "the inference endpoints" });
const security = (flags: ClientSecurityFlags) => clientSecurity(flags, readToken(flags));

function storedTrajectories(path: string): TrainingTrajectory[] {
  return trainingSet(SampleStore.read(path).records, "lightreasoner");
}

/** Samples in the reference's format, grouped into trajectories with the expert's tokenizer. */
function importedTrajectories(file: string, expertDir: string): TrainingTrajectory[] {
  const { records, samples, driftedSamples } = importPaperSamples(readPaperSamples(file), { tokenizer: TextTokenizer.load(expertDir), file });
  console.error(`${file}: imported ${samples} samples as ${records.length} trajectories (${driftedSamples} whose re-encoded prefix has a different length than their step)`);
  return records.map(recordTrajectory).filter((t): t is TrainingTrajectory => t !== null);
}

/** The first `limit` problems of a file (all when no limit). */
function problemsFrom(file: string, limit?: number) {
  const { problems } = readProblems(file);
  return limit === undefined ? problems : problems.slice(0, limit);
}

export function registerOfflineStages(program: Command): void {
  endpointSecurity(program.command("sample"))
    .description("stream trajectories from inference endpoints, keep steps with KL(expert || amateur) > beta, append them to a sample store (resumable)")
    .requiredOption("--inference <addrs>", "comma-separated host:port or dns:///name:port endpoints")
    .requiredOption("--expert <dir>", "the trainer's expert directory (its fingerprint must match every endpoint's expert)")
    .requiredOption("--problems <file>", "problems as JSON lines (GSM8K question/answer, or prompt)")
    .requiredOption("--store <file>", "sample store (JSON lines); an existing store is resumed")
    .option("--limit <n>", "use only the first n problems", parseIntegerOption("--limit"))
    .option("--beta <kl>", "keep steps whose KL is strictly above this (nats)", parseNumberOption("--beta"), 0.4)
    .option("--alpha <a>", "plausibility threshold of the soft label, in (0, 1]", parseNumberOption("--alpha"), 0.2)
    .option("--max-new-tokens <n>", "tokens per trajectory", parseIntegerOption("--max-new-tokens"), 128)
    .option("--seed <n>", "run seed (each problem's sampler seed derives from it)", parseIntegerOption("--seed"), 0)
    .action(async (o: ClientSecurityFlags & { inference: string; expert: string; problems: string; store: string; limit?: number; beta: number; alpha: number; maxNewTokens: number; seed: number }) => {
      const summary = await sampleToStore({
        endpoints: { targets: targets(o.inference), expertDir: o.expert, security: security(o) },
        problems: problemsFrom(o.problems, o.limit),
        storePath: o.store,
        config: { seed: o.seed, beta: o.beta, alpha: o.alpha, maxNewTokens: o.maxNewTokens },
      });
      const c = summary.counts;
      console.log(`${o.store}: ${c.problems} problems (${summary.alreadyStored} already stored), ${c.stepsSeen} steps seen, ${c.stepsSelected} selected, in ${summary.wallSeconds.toFixed(1)} s`);
    });

  endpointSecurity(program.command("train"))
    .description("train a LoRA adapter on the expert from a sample store (KL to the contrastive soft labels); optionally push it to endpoints")
    .requiredOption("--expert <dir>", "expert model directory (safetensors)")
    .option("--store <file>", "sample store written by `sample`")
    .option("--paper-samples <file>", "instead of --store: samples in the reference scripts' JSON-lines format (re-encoded, so not token-exact)")
    .requiredOption("--out <dir>", "PEFT adapter directory to write")
    .option("--steps <n>", "optimizer steps", parseIntegerOption("--steps"), 1000)
    .option("--lr <rate>", "peak learning rate", parseNumberOption("--lr"), 5e-5)
    .option("--checkpoint-dir <dir>", "checkpoints (a rerun resumes from the latest)")
    .option("--push <addrs>", "comma-separated endpoints to upload and activate the adapter on")
    .action(async (o: ClientSecurityFlags & { expert: string; store?: string; paperSamples?: string; out: string; steps: number; lr: number; checkpointDir?: string; push?: string }) => {
      const source = o.store ?? o.paperSamples;
      if (!source || (o.store && o.paperSamples)) throw new UsageError("give exactly one of --store and --paper-samples");
      const trajectories = o.store ? storedTrajectories(o.store) : importedTrajectories(o.paperSamples!, o.expert);
      if (trajectories.length === 0) throw new UsageError(`${source} holds no selected steps to train on`);
      const { config, weights } = loadModelDir(o.expert);
      const result = await trainLora({
        expert: { config, weights, source: o.expert },
        trajectories,
        config: { maxSteps: o.steps, learningRate: o.lr, pushEverySteps: 0 },
        checkpointDir: o.checkpointDir,
        log: (line) => console.error(line),
      });
      writePeftAdapter(o.out, result.adapter, { baseModel: o.expert });
      console.log(`${o.out}: ${result.progress.step} steps, ${result.progress.tunedTokens} tuned tokens, ${result.wallSeconds.toFixed(1)} s, tfjs backend ${result.backend.kind}`);
      for (const target of o.push ? targets(o.push) : []) {
        console.log(`pushed to ${target}: version ${await pushAdapter(target, result.adapter, { activate: true, baseModel: o.expert, security: security(o) })}`);
      }
    });

  endpointSecurity(program.command("eval"))
    .description("greedy accuracy on problems through the endpoints' Generate (expert with its active adapter, or the amateur)")
    .requiredOption("--inference <addrs>", "comma-separated endpoints")
    .requiredOption("--problems <file>", "held-out problems with reference answers")
    .option("--limit <n>", "use only the first n problems", parseIntegerOption("--limit"))
    .option("--model <which>", "expert or amateur", "expert")
    .option("--out <file>", "write per-problem results as JSON")
    .action(async (o: ClientSecurityFlags & { inference: string; problems: string; limit?: number; model: string; out?: string }) => {
      if (o.model !== "expert" && o.model !== "amateur") throw new UsageError(`--model must be expert or amateur, got "${o.model}"`);
      const pool = await EndpointPool.connect({ targets: targets(o.inference), security: security(o) });
      try {
        const result = await evaluate({ pool, problems: problemsFrom(o.problems, o.limit), mode: o.model });
        const ci = wilsonInterval(result.correct, result.problems);
        console.log(`${o.model}: ${result.correct}/${result.problems} = ${(100 * result.accuracy).toFixed(1)}% (95% ${(100 * ci.lower).toFixed(1)}-${(100 * ci.upper).toFixed(1)}), adapters ${result.adapterVersions.join(",") || "base"}`);
        if (o.out) writeFileSync(o.out, JSON.stringify({ accuracy: result.accuracy, perProblem: result.perProblem }, null, 2));
      } finally {
        pool.close();
      }
    });
}
