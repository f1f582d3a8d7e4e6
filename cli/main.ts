// The `lightreasoner` command line: one binary, one subcommand per job. Each subcommand
// lives in cli/commands/ and only parses flags before calling into core/ and services/.
import { Command, CommanderError } from "commander";
import { GrpcError } from "#core/grpc/adapter.ts";

/** A module under commands/ and the top-level names it registers. */
interface CommandModule {
  names: readonly string[];
  /** `argv`: the arguments after the binary's name, for modules that can register less. */
  register(program: Command, argv: readonly string[]): Promise<void>;
}

/**
 * Every command, in the order --help lists them. Only the module of the command being run is
 * imported: the others bring in TensorFlow.js, the trainer and the benchmark, which would
 * cost a long-running `serve inference` about half a CPU second at start and ~85 MiB resident
 * for as long as it runs. No command, `--help` or an unknown name load them all.
 */
const COMMAND_MODULES: readonly CommandModule[] = [
  { names: ["init-model"], register: async (p) => (await import("./commands/init-model.ts")).registerInitModel(p) },
  { names: ["export-onnx"], register: async (p) => (await import("./commands/export-onnx.ts")).registerExportOnnx(p) },
  {
    names: ["serve"],
    register: async (p, argv) => {
      const serve = (await import("./commands/serve-inference.ts")).registerServe(p);
      // `serve inference` need not load the trainer; `serve trainer` and `serve --help` do.
      if (argv[1] !== "inference") (await import("./commands/serve-trainer.ts")).registerServeTrainer(serve);
    },
  },
  { names: ["pretrain"], register: async (p) => (await import("./commands/pretrain.ts")).registerPretrain(p) },
  { names: ["world-data"], register: async (p) => (await import("./commands/world-data.ts")).registerWorldData(p) },
  { names: ["sample", "train", "eval"], register: async (p) => (await import("./commands/offline.ts")).registerOfflineStages(p) },
  { names: ["run"], register: async (p) => (await import("./commands/run.ts")).registerRun(p) },
  { names: ["runs"], register: async (p) => (await import("./commands/runs.ts")).registerRunsClient(p) },
  { names: ["bench", "bench-worker"], register: async (p) => (await import("./commands/bench.ts")).registerBench(p) },
  { names: ["experiment"], register: async (p) => (await import("./commands/experiment.ts")).registerExperiment(p) },
];

const program = new Command()
  .name("lightreasoner")
  .description("A small model teaches a large one to reason: LightReasoner as an inference + trainer service pair.")
  .showHelpAfterError()
  .exitOverride();

const argv = process.argv.slice(2);
const named = COMMAND_MODULES.find((m) => m.names.includes(argv[0]));
for (const module of named ? [named] : COMMAND_MODULES) await module.register(program, named ? argv : []);

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
