// `lightreasoner runs ...`: a command-line client of a running trainer service, for operators
// (start a run from a RunConfig in protobuf JSON, watch it, list, get, cancel, resume). It
// speaks only the contract, so it works against a trainer anywhere it can reach.
import type { Command } from "commander";
import { readFileSync } from "node:fs";
import { fromJson, toJsonString } from "@bufbuild/protobuf";
import type { JsonValue } from "@bufbuild/protobuf";
import { createClient } from "#core/grpc/adapter.ts";
import { RunConfigSchema, RunSchema, RunState, TrainerService } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import type { Run, RunConfig } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import { DEFAULT_TRAINER_GRPC_PORT } from "#trainer/main.ts";
import { followRun, stageName } from "#cli/run/run-progress.ts";
import { UsageError } from "#cli/options.ts";
import { addClientSecurityOptions, clientSecurity, readToken } from "#cli/security-flags.ts";
import type { ClientSecurityFlags } from "#cli/security-flags.ts";

interface ClientFlags extends ClientSecurityFlags {
  trainer: string;
}

type TrainerClient = ReturnType<typeof createClient<(typeof TrainerService)["method"]>>;

/** A RunConfig from a JSON file, in protobuf's JSON mapping (lowerCamelCase or proto field names). */
export function readRunConfig(file: string): RunConfig {
  let json: JsonValue;
  try {
    json = JSON.parse(readFileSync(file, "utf8")) as JsonValue;
  } catch (err) {
    throw new UsageError(`${file}: not a JSON file (${(err as Error).message})`);
  }
  try {
    return fromJson(RunConfigSchema, json);
  } catch (err) {
    throw new UsageError(`${file}: not a RunConfig (${(err as Error).message}); see proto/lightreasoner/v1/trainer.proto`);
  }
}

function oneLine(run: Run): string {
  const c = run.counters;
  const progress = c ? `${c.problemsSampled}/${c.problemsTotal} problems, ${c.stepsSelected}/${c.stepsSeen} steps kept, ${c.optimizerSteps}/${c.optimizerStepsTotal} optimizer steps` : "";
  return `${run.runId.padEnd(32)} ${RunState[run.state].padEnd(9)} ${stageName(run.stage).padEnd(38)} ${progress}`;
}

async function withClient<T>(flags: ClientFlags, work: (client: TrainerClient) => Promise<T>): Promise<T> {
  const client = createClient(TrainerService, flags.trainer, { security: clientSecurity(flags, readToken(flags)) });
  try {
    return await work(client);
  } finally {
    client.close();
  }
}

const printRun = (run: Run | undefined) => console.log(run ? toJsonString(RunSchema, run, { prettySpaces: 2 }) : "{}");

export function registerRunsClient(program: Command): void {
  const runs = program.command("runs").description("talk to a running trainer service: start, watch, list, get, cancel, resume runs");
  const trainerOption = (c: Command) => addClientSecurityOptions(c.option("--trainer <addr>", "the trainer service's host:port", `127.0.0.1:${DEFAULT_TRAINER_GRPC_PORT}`), { what: "the trainer" });

  trainerOption(runs.command("start <config.json>"))
    .description("start a run from a RunConfig (protobuf JSON) and follow it until it finishes (--detach: return at once)")
    .option("--id <run-id>", "the run's id (default: the trainer makes one)", "")
    .option("--validate", "only check the config, files, endpoints and fingerprints; print the resolved config")
    .option("--detach", "print the run id and return without following it")
    .action((file: string, flags: ClientFlags & { id: string; validate?: boolean; detach?: boolean }) =>
      withClient(flags, async (client) => {
        const { run } = await client.startRun({ config: readRunConfig(file), runId: flags.id, validateOnly: flags.validate === true });
        if (!run) throw new Error("StartRun returned no run");
        if (flags.validate) return printRun(run);
        console.log(`started ${run.runId} (files in ${run.runDir})`);
        if (!flags.detach) printRun(await followRun(client, run.runId, run.runId));
      }),
    );

  trainerOption(runs.command("watch <run-id>"))
    .description("follow a run until it finishes")
    .action((runId: string, flags: ClientFlags) => withClient(flags, async (client) => printRun(await followRun(client, runId, runId))));

  trainerOption(runs.command("list"))
    .description("every run, newest first")
    .action((flags: ClientFlags) =>
      withClient(flags, async (client) => {
        for (const run of (await client.listRuns({})).runs) console.log(oneLine(run));
      }),
    );

  trainerOption(runs.command("get <run-id>"))
    .description("one run, as JSON")
    .action((runId: string, flags: ClientFlags) => withClient(flags, async (client) => printRun((await client.getRun({ runId })).run)));

  trainerOption(runs.command("cancel <run-id>"))
    .description("stop a run (it stays resumable)")
    .action((runId: string, flags: ClientFlags) => withClient(flags, async (client) => console.log(oneLine((await client.cancelRun({ runId })).run!))));

  trainerOption(runs.command("resume <run-id>"))
    .description("continue a FAILED or CANCELLED run where it stopped, and follow it")
    .action((runId: string, flags: ClientFlags) =>
      withClient(flags, async (client) => {
        await client.resumeRun({ runId });
        printRun(await followRun(client, runId, runId));
      }),
    );
}
