// An experiment spec: one JSON file under experiments/ holding rows of the README's table of
// experiments, each row a set of `lightreasoner run` settings, the seeds to run it with, and
// the world's problems it trains and is measured on. The rules of the method's evidence live
// here, where a spec is read: settings are tuned on the validation split, and only the spec
// marked as the frozen default (with the default settings) may read the test split.
import { existsSync, readFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { z } from "zod";
import { RUN_DEFAULTS, SFT_BUDGETS } from "#cli/commands/run.ts";

/** Where specs live, relative to the repository root; a bare name means experiments/<name>.json. */
export const SPECS_DIR = "experiments";

/** A spec that cannot be run: the file, the field (as a JSON path) and what is wrong with it. */
export class ExperimentSpecError extends Error {
  override name = "ExperimentSpecError";
  constructor(
    readonly file: string,
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${file}: ${field ? `${field}: ` : ""}${problem}`);
  }
}

const count = (min: number) => z.number().int().min(min);

/**
 * What a row's cells show of each round's report: the change in accuracy of LightReasoner, of
 * the full SFT baseline, of the SFT baselines stopped at LightReasoner's tuned tokens or wall
 * time (--sft-matched), LightReasoner's lead over the token-matched one (paired), or the
 * change after LightReasoner's second or third round (--rounds), or each method's change per
 * 1,000 tuned tokens beside the full SFT baseline's.
 */
export const MEASURES = ["lightreasoner", "sft", "sft-at-tokens", "sft-at-time", "lead-at-tokens", "round-2", "round-3", "per-1k-tokens"] as const;
export type Measure = (typeof MEASURES)[number];

/** A contiguous run of the built-in world's problems: `count` problems of one split after `offset`. */
const worldSliceSchema = z
  .object({
    seed: count(0).describe("the world generator's seed (lightreasoner world-data --seed)"),
    split: z.enum(["train", "validation", "test"]),
    offset: count(0).default(0).describe("problems of the split skipped first (the built-in pair was pretrained on seed 1's first 20,000 training problems)"),
  })
  .strict();

/**
 * The `lightreasoner run` settings a spec may set, by the run command's flag names; unset ones
 * take RUN_DEFAULTS. Problems, models and the report directory are the runner's to set.
 */
const settingsSchema = z
  .object({
    sample: count(1),
    eval: count(1),
    mode: z.enum(["online", "offline"]),
    beta: z.number().min(0),
    alpha: z.number().gt(0).max(1),
    temperature: z.number().min(0),
    maxNewTokens: count(1),
    lr: z.number().positive(),
    steps: count(1),
    batchSize: count(1),
    gradientAccumulation: count(1),
    pushEvery: count(0),
    samplingAdapter: z.enum(["base", "latest"]),
    label: z.enum(["contrastive", "expert-argmax"]),
    rounds: count(1).max(10),
    sft: z.boolean(),
    sftSample: count(1),
    sftAttempts: count(1),
    sftTemperature: z.number().min(0),
    sftSteps: count(1),
    sftLr: z.number().positive(),
    sftMatched: z.array(z.enum(SFT_BUDGETS)).refine((b) => new Set(b).size === b.length, "lists a budget twice"),
  })
  .partial()
  .strict();

export type RowSettings = z.output<typeof settingsSchema>;

/**
 * A model the rows use: a directory, and when it is not built-in, the `lightreasoner`
 * commands (argument lists, run in order from the repository root) that build it there.
 */
const modelSchema = z.union([
  z.string().min(1),
  z
    .object({
      dir: z.string().min(1),
      build: z.array(z.array(z.string()).min(1)).min(1).describe("lightreasoner subcommands, e.g. [\"pretrain\", \"--config\", ...]; each is resumable or cheap to repeat"),
      about: z.string().optional(),
    })
    .strict(),
]);

const rowSchema = z
  .object({
    id: z.string().regex(/^[a-z0-9][a-z0-9.-]*$/, "must be lower-case letters, digits, dots and dashes"),
    label: z.string().min(1).describe("the row's text in the README table's first column"),
    measure: z.enum(MEASURES).default("lightreasoner").describe("what the table shows of each round"),
    settings: settingsSchema.default({}),
    /** Settings that differ between the row's cells ("α 0.1 / α 0.05"); each is run with every seed. */
    variants: z.array(settingsSchema).min(1).default([{}]),
    seeds: z.array(count(0)).min(1),
    models: z.object({ expert: modelSchema.optional(), amateur: modelSchema.optional() }).strict().default({}),
    /** Why the row cannot be regenerated yet; such a row is listed, never run. */
    notReproducible: z.string().min(1).optional(),
    /** The figures the README's table held before this spec existed, as typed there, for comparison. */
    previously: z.string().optional(),
  })
  .strict();

const specSchema = z
  .object({
    title: z.string().min(1),
    about: z.string().optional(),
    /** Position of the spec's rows in the rendered table (ascending). */
    order: z.number(),
    /** The only spec allowed to read the test split: the default settings, frozen before it was read. */
    frozenDefault: z.boolean().default(false),
    problems: z.object({ train: worldSliceSchema, eval: worldSliceSchema }).strict(),
    models: z.object({ expert: modelSchema.default("models/expert"), amateur: modelSchema.default("models/amateur") }).strict().prefault({}),
    settings: settingsSchema.default({}),
    rows: z.array(rowSchema).min(1),
  })
  .strict();

export type ModelRef = z.output<typeof modelSchema>;
export type WorldSlice = z.output<typeof worldSliceSchema>;
export type ExperimentRow = z.output<typeof rowSchema>;

export interface ExperimentSpec extends z.output<typeof specSchema> {
  /** The spec's name: its file name without .json. */
  name: string;
  file: string;
}

/** The spec file a command-line argument names: a path to a .json file, or a name under experiments/. */
export function specPath(nameOrPath: string, root: string): string {
  if (nameOrPath.endsWith(".json")) return resolve(nameOrPath);
  if (!/^[a-z0-9][a-z0-9.-]*$/.test(nameOrPath)) throw new ExperimentSpecError(nameOrPath, "", "is neither a .json file nor a spec name (lower-case letters, digits, dots, dashes)");
  return join(root, SPECS_DIR, `${nameOrPath}.json`);
}

export function loadSpec(file: string): ExperimentSpec {
  if (!existsSync(file)) throw new ExperimentSpecError(file, "", "no such spec file");
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new ExperimentSpecError(file, "", `is not valid JSON (${(err as Error).message})`);
  }
  return parseSpec(json, file);
}

/** Validates a spec's JSON: its shape, then the rules on splits, seeds and ids. */
export function parseSpec(json: unknown, file: string): ExperimentSpec {
  const parsed = specSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ExperimentSpecError(file, issue.path.join("."), issue.message);
  }
  const spec: ExperimentSpec = { ...parsed.data, name: basename(file).replace(/\.json$/, ""), file };
  const { train, eval: evaluation } = spec.problems;
  if (train.split !== "train") throw new ExperimentSpecError(file, "problems.train.split", `must be "train": the method samples training problems, never ${train.split} ones`);
  if (evaluation.split === "train") throw new ExperimentSpecError(file, "problems.eval.split", "must be held out (validation, or test for the frozen default), not train");
  if (evaluation.split === "test") {
    if (!spec.frozenDefault) {
      throw new ExperimentSpecError(file, "problems.eval.split", 'the test split is read once, by the frozen default (a spec with "frozenDefault": true); choose settings on "validation"');
    }
    for (const [i, row] of spec.rows.entries()) {
      for (const [j, variant] of row.variants.entries()) {
        const changed = changedFromDefaults({ ...spec.settings, ...row.settings, ...variant });
        if (changed.length > 0) {
          throw new ExperimentSpecError(file, `rows.${i}`, `a frozen default reads the test split with the default settings only, but ${j > 0 ? `variant ${j} ` : ""}changes ${changed.join(", ")}`);
        }
      }
      if (row.models.expert !== undefined || row.models.amateur !== undefined) throw new ExperimentSpecError(file, `rows.${i}.models`, "a frozen default uses the built-in pair");
    }
    if (spec.models.expert !== "models/expert" || spec.models.amateur !== "models/amateur") throw new ExperimentSpecError(file, "models", "a frozen default uses the built-in pair");
  } else if (spec.frozenDefault) {
    throw new ExperimentSpecError(file, "frozenDefault", "marks the spec that reads the test split; this one evaluates on validation, so leave it unset");
  }
  const ids = new Set<string>();
  for (const [i, row] of spec.rows.entries()) {
    if (ids.has(row.id)) throw new ExperimentSpecError(file, `rows.${i}.id`, `"${row.id}" is used by an earlier row`);
    ids.add(row.id);
    if (new Set(row.seeds).size !== row.seeds.length) throw new ExperimentSpecError(file, `rows.${i}.seeds`, "lists a seed twice");
    const needs: Partial<Record<Measure, string>> = { sft: "sft", "per-1k-tokens": "sft", "sft-at-tokens": "tokens", "sft-at-time": "time", "lead-at-tokens": "tokens" };
    const need = needs[row.measure];
    for (const variant of row.variants) {
      const settings = { ...DEFAULT_SETTINGS, ...spec.settings, ...row.settings, ...variant };
      const round = /^round-(\d+)$/.exec(row.measure);
      if (round && settings.rounds < Number(round[1])) throw new ExperimentSpecError(file, `rows.${i}.measure`, `"${row.measure}" needs "rounds" of at least ${round[1]}`);
      const has = need === "sft" ? settings.sft : need === undefined || settings.sftMatched.includes(need as "tokens" | "time");
      if (!has) throw new ExperimentSpecError(file, `rows.${i}.measure`, need === "sft" ? `"sft" needs the SFT baseline ("sft": true)` : `"${row.measure}" needs "sftMatched" to include "${need}"`);
    }
  }
  return spec;
}

/** `lightreasoner run`'s defaults under the spec's names: what an unset setting means. */
export const DEFAULT_SETTINGS: Readonly<Required<RowSettings>> = Object.freeze({
  sample: RUN_DEFAULTS.sample,
  eval: RUN_DEFAULTS.eval,
  mode: "online",
  beta: RUN_DEFAULTS.beta,
  alpha: RUN_DEFAULTS.alpha,
  temperature: RUN_DEFAULTS.temperature,
  maxNewTokens: RUN_DEFAULTS.maxNewTokens,
  lr: RUN_DEFAULTS.learningRate,
  steps: RUN_DEFAULTS.steps,
  batchSize: RUN_DEFAULTS.batchSize,
  gradientAccumulation: RUN_DEFAULTS.gradientAccumulation,
  pushEvery: RUN_DEFAULTS.pushEvery,
  samplingAdapter: RUN_DEFAULTS.samplingAdapter,
  label: RUN_DEFAULTS.label,
  rounds: RUN_DEFAULTS.rounds,
  sft: true,
  sftSample: RUN_DEFAULTS.sftSample,
  sftAttempts: RUN_DEFAULTS.sftAttempts,
  sftTemperature: RUN_DEFAULTS.sftTemperature,
  sftSteps: RUN_DEFAULTS.sftSteps,
  sftLr: RUN_DEFAULTS.sftLearningRate,
  sftMatched: [],
});

/** The settings keys whose value differs from `lightreasoner run`'s default. */
function changedFromDefaults(settings: RowSettings): string[] {
  return Object.entries(settings)
    .filter(([key, value]) => value !== undefined && JSON.stringify(value) !== JSON.stringify(DEFAULT_SETTINGS[key as keyof RowSettings]))
    .map(([key]) => key);
}
