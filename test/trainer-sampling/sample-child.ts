// A sampling run in a process of its own, for the kill test: it samples a problems file into
// a store against the given endpoints and exits; the test kills it with SIGKILL part-way and
// starts it again. Usage: node --import tsx sample-child.ts '<json options>'
import { readProblems } from "#core/tasks/problems.ts";
import { sampleToStore } from "#trainer/sampling/sample-to-store.ts";

interface ChildOptions {
  targets: string[];
  expertDir: string;
  problemsFile: string;
  storePath: string;
  config: { seed: number } & Record<string, unknown>;
}

const options = JSON.parse(process.argv[2] ?? "{}") as ChildOptions;
try {
  const { problems } = readProblems(options.problemsFile);
  const result = await sampleToStore({
    endpoints: { targets: options.targets, expertDir: options.expertDir, downForMs: 300 },
    problems,
    storePath: options.storePath,
    config: options.config,
  });
  process.stdout.write(`${JSON.stringify({ alreadyStored: result.alreadyStored, sampled: result.sampled, recoveredBytes: result.recoveredBytes, complete: result.complete })}\n`);
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n`);
  process.exitCode = 1;
}
