// The problems a run samples or evaluates: a JSON lines file, its layout checked against the
// one the configuration names, cut by line offset and limit. Errors name the config field and
// (through the problems reader) the file's line and field.
import { existsSync } from "node:fs";
import type { Problem } from "#core/tasks/problems.ts";
import { readProblems } from "#core/tasks/problems.ts";
import { RunConfigError } from "./errors.ts";
import type { ProblemSourcePlan } from "./run-config.ts";

export function loadProblemSource(source: ProblemSourcePlan, field: string): Problem[] {
  if (!existsSync(source.path)) throw new RunConfigError(`${field}.path`, `no file at ${source.path} (paths are on the trainer's file system)`);
  const set = readProblems(source.path);
  if (source.layout !== "detect" && set.layout !== source.layout) {
    throw new RunConfigError(`${field}.format`, `says ${source.layout.toUpperCase()}, but ${source.path} is in the ${set.layout} layout`);
  }
  const after = set.problems.filter((p) => p.line > source.offset);
  const taken = source.limit > 0 ? after.slice(0, source.limit) : after;
  if (taken.length === 0) throw new RunConfigError(field, `${source.path} has no problems after line ${source.offset}`);
  return taken;
}
