// Runs an experiment spec's rows: each (row, variant, seed) becomes the settings of one
// `lightreasoner run` round (runRound, the command's own code: the two services as
// processes, the runs through TrainerService), on problem files cut from the built-in world
// and models built by the spec's commands where they are not built-in. Finished rounds are
// found in the results cache by their key and skipped, so an interrupted experiment resumes
// at the round it was in.
import { spawnSync } from "node:child_process";
import { Command } from "commander";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { modelFingerprint } from "#core/formats/model-dir.ts";
import { generateProblems } from "#world/arithmetic.ts";
import { registerRun, runRound } from "#cli/commands/run.ts";
import type { RunFlags } from "#cli/commands/run.ts";
import { UsageError } from "#cli/options.ts";
import type { RunInputs, RunRecordOfExperiment } from "./results.ts";
import { ResultCache, runKey, sha256OfFile } from "./results.ts";
import type { ExperimentRow, ExperimentSpec, ModelRef, RowSettings, WorldSlice } from "./spec.ts";
import { DEFAULT_SETTINGS } from "./spec.ts";
import { changeCell } from "./cells.ts";

const BIN = fileURLToPath(new URL("../../bin/lightreasoner.mjs", import.meta.url));

/** One round of a row: a variant of its settings with one seed. */
export interface PlannedRun {
  spec: ExperimentSpec;
  row: ExperimentRow;
  variant: number;
  seed: number;
  settings: Required<RowSettings>;
}

/** The spec's rounds in table order (rows, then variants, then seeds); `onlyRows` keeps the rows with those ids, `onlySeeds` those seeds. */
export function plannedRuns(spec: ExperimentSpec, onlyRows: readonly string[] = [], onlySeeds: readonly number[] = []): PlannedRun[] {
  const unknown = onlyRows.filter((id) => !spec.rows.some((r) => r.id === id));
  if (unknown.length > 0) throw new UsageError(`--only-row: ${spec.name} has no row ${unknown.join(", ")} (its rows: ${spec.rows.map((r) => r.id).join(", ")})`);
  return spec.rows
    .filter((row) => onlyRows.length === 0 || onlyRows.includes(row.id))
    .flatMap((row) => row.variants.flatMap((variant, v) => row.seeds.filter((seed) => onlySeeds.length === 0 || onlySeeds.includes(seed)).map((seed) => ({ spec, row, variant: v, seed, settings: { ...DEFAULT_SETTINGS, ...spec.settings, ...row.settings, ...variant } }))));
}

/** Where a model lives and, when it is not built-in, how it is built. */
function modelOf(run: PlannedRun, role: "expert" | "amateur"): ModelRef {
  return run.row.models[role] ?? run.spec.models[role];
}

const dirOf = (ref: ModelRef, root: string) => resolve(root, typeof ref === "string" ? ref : ref.dir);

/** The marker a finished build leaves; a model whose marker lists other commands is built again. */
const BUILT_FILE = "experiment-build.json";

function isBuilt(ref: ModelRef, root: string): boolean {
  const dir = dirOf(ref, root);
  if (typeof ref === "string") return existsSync(join(dir, "config.json"));
  const marker = join(dir, BUILT_FILE);
  return existsSync(marker) && JSON.stringify(JSON.parse(readFileSync(marker, "utf8")).build) === JSON.stringify(ref.build);
}

/** Runs the spec's build commands for a model that is not there yet (each `lightreasoner` command resumes or is cheap to repeat). */
function buildModel(ref: ModelRef, root: string): void {
  const dir = dirOf(ref, root);
  if (typeof ref === "string") {
    if (!existsSync(join(dir, "config.json"))) throw new UsageError(`no model at ${dir} (the built-in pair is rebuilt by npm run models:build)`);
    return;
  }
  for (const argv of ref.build) {
    console.log(`building ${ref.dir}: lightreasoner ${argv.join(" ")}`);
    const child = spawnSync(process.execPath, [BIN, ...argv], { cwd: root, stdio: "inherit" });
    if (child.status !== 0) throw new Error(`lightreasoner ${argv.join(" ")} exited with ${child.status ?? child.signal}; run the experiment again to resume the build`);
  }
  writeFileSync(join(dir, BUILT_FILE), `${JSON.stringify({ build: ref.build, builtAt: new Date().toISOString() }, null, 2)}\n`);
}

/** The world's problems `slice` names, `count` of them, in a file of their own under the results directory (written once). */
export function worldProblemsFile(slice: WorldSlice, count: number, dataDir: string): string {
  const file = join(dataDir, `world-seed${slice.seed}-${slice.split}-${slice.offset}-${count}.jsonl`);
  if (existsSync(file)) return file;
  mkdirSync(dataDir, { recursive: true });
  // Each split is a stream of its own, so the first offset + count problems are the same whatever else is drawn.
  const problems = generateProblems(slice.offset + count, { seed: slice.seed, split: slice.split }).slice(slice.offset);
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, `${problems.map((p) => JSON.stringify({ question: p.question, answer: p.answer })).join("\n")}\n`);
  renameSync(tmp, file);
  return file;
}

/** Everything a round needs before it can be keyed: its problem files and models' fingerprints. */
export interface PreparedRun {
  planned: PlannedRun;
  flags: Omit<RunFlags, "reportDir">;
  inputs: RunInputs;
  key: string;
}

/** Cuts the problem files and fingerprints the models; null when a model is not built yet (and `build` is false). */
export function prepareRun(planned: PlannedRun, options: { root: string; resultsDir: string; build: boolean }): PreparedRun | null {
  const { root, resultsDir } = options;
  const { settings, seed, spec } = planned;
  const expertRef = modelOf(planned, "expert");
  const amateurRef = modelOf(planned, "amateur");
  for (const ref of [expertRef, amateurRef]) {
    if (isBuilt(ref, root)) continue;
    if (!options.build) return null;
    buildModel(ref, root);
  }
  const dataDir = join(resultsDir, "data");
  // The SFT baseline reads the same training file past LightReasoner's problems.
  const trainCount = Math.max(settings.sample, settings.sft ? settings.sftSample : 0);
  const problems = worldProblemsFile(spec.problems.train, trainCount, dataDir);
  const evalProblems = worldProblemsFile(spec.problems.eval, settings.eval, dataDir);
  const expert = dirOf(expertRef, root);
  const amateur = dirOf(amateurRef, root);
  const flags: Omit<RunFlags, "reportDir"> = { ...settings, seed, expert, amateur, problems, evalProblems };
  // Settings added after the first rounds were keyed, at the value those rounds ran with (no
  // matched baselines; sampling from the base expert, which is what an adapter pushed only at
  // the end meant; the contrastive label; one round), are left out, so those rounds keep their keys.
  const { sftMatched, samplingAdapter, label, rounds, ...keyed } = settings;
  const inputs: RunInputs = {
    settings: {
      ...keyed,
      ...(sftMatched.length > 0 ? { sftMatched } : {}),
      ...(samplingAdapter !== "base" ? { samplingAdapter } : {}),
      ...(label !== "contrastive" ? { label } : {}),
      ...(rounds !== 1 ? { rounds } : {}),
      seed,
    },
    models: { expert: modelFingerprint(expert), amateur: modelFingerprint(amateur) },
    problems: { train: sha256OfFile(problems), eval: sha256OfFile(evalProblems) },
  };
  return { planned, flags, inputs, key: runKey(inputs) };
}

/** The `lightreasoner run` command line a round is equivalent to (for people; the runner calls runRound directly). */
export function commandLine(flags: Omit<RunFlags, "reportDir">, root: string): string {
  const rel = (p: string) => (p.startsWith(`${root}/`) ? p.slice(root.length + 1) : p);
  const parts = ["lightreasoner run", `--expert ${rel(flags.expert)}`, `--amateur ${rel(flags.amateur)}`, `--problems ${rel(flags.problems!)}`, `--eval-problems ${rel(flags.evalProblems!)}`];
  // The settings' flags as the run command declares them, in its order: a setting at its default is left out.
  for (const [key, flag] of runFlagNames()) {
    if (!(key in DEFAULT_SETTINGS)) continue;
    const value = flags[key as keyof RowSettings];
    if (JSON.stringify(value) === JSON.stringify(DEFAULT_SETTINGS[key as keyof RowSettings])) continue;
    if (typeof value === "boolean") parts.push(flag);
    else parts.push(`${flag} ${Array.isArray(value) ? value.join(",") : value}`);
  }
  parts.push(`--seed ${flags.seed}`);
  return parts.join(" ");
}

/** Each option of `lightreasoner run` as [setting name, flag] ("sft" -> "--no-sft"), read from the command itself. */
function runFlagNames(): [string, string][] {
  const program = new Command();
  registerRun(program);
  return program.commands[0].options.map((option) => [option.attributeName(), option.long!]);
}

export interface ExperimentOptions {
  root: string;
  resultsDir: string;
  onlyRows?: readonly string[];
  onlySeeds?: readonly number[];
  /** List the rounds and whether each is cached; run nothing, build nothing. */
  dryRun?: boolean;
}

/** Runs every round of the spec not yet in the cache, in order; returns how many ran, were cached, or could not run. */
export async function runExperiment(spec: ExperimentSpec, options: ExperimentOptions): Promise<{ ran: number; cached: number; skipped: number }> {
  const cache = new ResultCache(options.resultsDir);
  const tally = { ran: 0, cached: 0, skipped: 0 };
  for (const planned of plannedRuns(spec, options.onlyRows, options.onlySeeds)) {
    const name = `${spec.name}/${planned.row.id}${planned.row.variants.length > 1 ? ` variant ${planned.variant}` : ""} seed ${planned.seed}`;
    if (planned.row.notReproducible) {
      console.log(`${name}: not reproducible yet: ${planned.row.notReproducible}`);
      tally.skipped += 1;
      continue;
    }
    const prepared = prepareRun(planned, { root: options.root, resultsDir: options.resultsDir, build: !options.dryRun });
    if (!prepared) {
      console.log(`${name}: its models are not built yet (the run builds them)`);
      tally.skipped += 1;
      continue;
    }
    const found = cache.find(prepared.key);
    if (found) {
      console.log(`${name}: cached in ${cache.runDir(prepared.key)}: ${changeCell(found.report, planned.row.measure)}`);
      tally.cached += 1;
      continue;
    }
    const command = commandLine(prepared.flags, options.root);
    if (options.dryRun) {
      console.log(`${name}: to run (key ${prepared.key.slice(0, 16)}): ${command}`);
      tally.skipped += 1;
      continue;
    }
    console.log(`\n${name}: ${command}`);
    const started = performance.now();
    const reportDir = cache.begin(prepared.key);
    const report = await runRound({ ...prepared.flags, reportDir });
    const record: RunRecordOfExperiment = {
      key: prepared.key,
      spec: spec.name,
      row: planned.row.id,
      variant: planned.variant,
      seed: planned.seed,
      inputs: prepared.inputs,
      command,
      finishedAt: new Date().toISOString(),
      wallSeconds: (performance.now() - started) / 1000,
    };
    cache.finish(record);
    console.log(`${name}: ${changeCell(report, planned.row.measure)} (${planned.row.measure}), round took ${record.wallSeconds.toFixed(0)} s`);
    tally.ran += 1;
  }
  return tally;
}
