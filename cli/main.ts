// The `lightreasoner` command line: one binary, one subcommand per job. Each subcommand
// lives in cli/commands/ and only parses flags before calling into core/ and services/.
import { Command, CommanderError } from "commander";
import { GrpcError } from "#core/grpc/adapter.ts";
import { registerInitModel } from "./commands/init-model.ts";
import { registerExportOnnx } from "./commands/export-onnx.ts";
import { registerServe } from "./commands/serve-inference.ts";
import { registerServeTrainer } from "./commands/serve-trainer.ts";
import { registerPretrain } from "./commands/pretrain.ts";
import { registerWorldData } from "./commands/world-data.ts";
import { registerRun } from "./commands/run.ts";
import { registerRunsClient } from "./commands/runs.ts";
import { registerOfflineStages } from "./commands/offline.ts";
import { registerBench } from "./commands/bench.ts";

const program = new Command()
  .name("lightreasoner")
  .description("A small model teaches a large one to reason: LightReasoner as an inference + trainer service pair.")
  .showHelpAfterError()
  .exitOverride();

registerInitModel(program);
registerExportOnnx(program);
registerServeTrainer(registerServe(program));
registerPretrain(program);
registerWorldData(program);
registerOfflineStages(program);
registerRun(program);
registerRunsClient(program);
registerBench(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  // Expected failures (bad files, bad flags) print one line; anything else keeps its stack.
  const known = err instanceof Error && err.name !== "Error" && err.name !== "TypeError";
  // A service's refusal reads as its status code and message, e.g. "NOT_FOUND: no run with id ...".
  const message = err instanceof GrpcError ? `${err.codeName}: ${err.message}` : known ? (err as Error).message : (err as Error)?.stack ?? String(err);
  console.error(`lightreasoner: ${message}`);
  process.exit(1);
}
