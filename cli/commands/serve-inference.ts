// `lightreasoner serve inference`: runs the inference service (expert + amateur in lockstep,
// adapters, metrics) until SIGTERM or SIGINT, then shuts down gracefully. `serve` is the
// parent of every long-running service; `serve trainer` joins it the same way.
import { Command, Option } from "commander";
import { pino } from "pino";
import { DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT, startInferenceServer } from "#inference/main.ts";
import { EXECUTION_PROVIDER_CHOICES } from "#inference/model/execution-provider.ts";
import type { ExecutionProviderChoice } from "#inference/model/execution-provider.ts";
import { DEFAULT_LIMITS } from "#inference/server/limits.ts";
import { DEFAULT_BATCH_GATHER, PREFILL_TOKENS_PER_BATCH } from "#inference/engine/scheduler.ts";
import { parseFolderOption, parseIntegerOption, parsePortOption } from "#cli/options.ts";
import { addServerSecurityOptions, serverSecurity } from "#cli/security-flags.ts";
import type { ServerSecurityFlags } from "#cli/security-flags.ts";
import { serveUntilSignal } from "./until-signal.ts";

interface ServeInferenceFlags extends ServerSecurityFlags {
  expert: string;
  amateur: string;
  host: string;
  port: number;
  metricsPort: number;
  executionProvider: ExecutionProviderChoice;
  threads?: number;
  prepack: boolean;
  prepackedCache?: string;
  maxBatchSize?: number;
  maxStreams?: number;
  maxNewTokens?: number;
  maxPromptTokens?: number;
  maxResidentAdapterBytes?: number;
  adapterDir: string[];
  shutdownDeadlineMs: number;
  batchGatherMs: number;
  prefillBatchTokens: number;
  logLevel: string;
}

const collect = (value: string, previous: string[]) => [...previous, value];

/** The limit's documented default, for --help (one source of truth: server/limits.ts). */
const defaultLimit = (name: keyof typeof DEFAULT_LIMITS) => DEFAULT_LIMITS[name];

/** Adds `serve inference` under `serve` (created if missing); returns `serve` for other services to join. */
export function registerServe(program: Command): Command {
  const serve = program.commands.find((c) => c.name() === "serve") ?? program.command("serve").description("run a long-lived service");
  const command = serve
    .command("inference")
    .description("serve the expert/amateur pair over gRPC: trajectories with both distributions, generation, scoring, hot LoRA adapters")
    .requiredOption("--expert <dir>", "expert model directory (Hugging Face safetensors, or model.onnx with tokenizer)")
    .requiredOption("--amateur <dir>", "amateur model directory; must share the expert's tokenizer")
    .option("--host <host>", "interface to listen on (0.0.0.0: every interface)", "127.0.0.1")
    .option("--port <port>", "gRPC port (0: any free port, printed at start)", parsePortOption("--port"), DEFAULT_GRPC_PORT)
    .option("--metrics-port <port>", "Prometheus /metrics port (0: any free port)", parsePortOption("--metrics-port"), DEFAULT_METRICS_PORT)
    .addOption(new Option("--execution-provider <provider>", "ONNX Runtime execution provider").choices(EXECUTION_PROVIDER_CHOICES).default("auto"))
    .option("--threads <n>", "ONNX Runtime threads per session (default: ONNX Runtime's choice)", parseIntegerOption("--threads"))
    .option("--no-prepack", "skip ONNX Runtime's weight prepacking on the CPU: start-up takes about 40% of the CPU time, decode steps 1.5-1.8x longer")
    .option(
      "--prepacked-cache <dir>",
      "keep ONNX Runtime's prepacked weights in <dir> between starts: the first start writes them (about twice the models' float32 bytes on disk), later ones read them instead of packing",
      parseFolderOption("--prepacked-cache"),
    )
    .option("--max-batch-size <n>", `sequences per batched forward pass (default ${defaultLimit("maxBatchSize")})`, parseIntegerOption("--max-batch-size"))
    .option("--max-streams <n>", `concurrent calls that run the models (default ${defaultLimit("maxStreams")})`, parseIntegerOption("--max-streams"))
    .option("--max-new-tokens <n>", `largest max_new_tokens a request may ask for (default ${defaultLimit("maxNewTokens")})`, parseIntegerOption("--max-new-tokens"))
    .option("--max-prompt-tokens <n>", `most prompt tokens accepted (default ${defaultLimit("maxPromptTokens")})`, parseIntegerOption("--max-prompt-tokens"))
    .option("--adapter-dir <dir>", "directory LoadAdapter may read adapters from (repeatable)", collect, [])
    .option(
      "--max-resident-adapter-bytes <n>",
      `most bytes of LoRA factors held at once; a load past it evicts the least recently used adapter that is neither active nor in use, or fails (default ${defaultLimit("maxResidentAdapterBytes")})`,
      parseIntegerOption("--max-resident-adapter-bytes"),
    )
    .option("--shutdown-deadline-ms <ms>", "on SIGTERM, how long running streams may take to finish", parseIntegerOption("--shutdown-deadline-ms"), 10_000)
    .option("--batch-gather-ms <ms>", "how long a batch may wait for sequences whose client is behind (0: never)", parseIntegerOption("--batch-gather-ms"), DEFAULT_BATCH_GATHER.maxMs)
    .option(
      "--prefill-batch-tokens <n>",
      "prompt tokens prefilled in one batch (a longer prompt is read in chunks of this many, one a step, on graphs built here); each batch holds the server's event loop while it runs, so fewer answer health checks and stream messages sooner",
      parseIntegerOption("--prefill-batch-tokens"),
      PREFILL_TOKENS_PER_BATCH,
    )
    .option("--log-level <level>", "pino log level (trace, debug, info, warn, error)", "info");
  addServerSecurityOptions(command)
    .action(async (flags: ServeInferenceFlags) => {
      const security = serverSecurity(flags);
      const logger = pino({ name: "lightreasoner-inference", level: flags.logLevel });
      const maxDefaultNew = defaultLimit("defaultMaxNewTokens");
      const server = await startInferenceServer({
        expertDir: flags.expert,
        amateurDir: flags.amateur,
        host: flags.host,
        port: flags.port,
        metricsPort: flags.metricsPort,
        executionProvider: flags.executionProvider,
        threads: flags.threads,
        prepack: flags.prepack,
        prepackedCacheDir: flags.prepackedCache,
        limits: {
          maxBatchSize: flags.maxBatchSize,
          maxStreams: flags.maxStreams,
          maxNewTokens: flags.maxNewTokens,
          maxPromptTokens: flags.maxPromptTokens,
          maxResidentAdapterBytes: flags.maxResidentAdapterBytes,
          // A lower --max-new-tokens also lowers the default a request gets.
          defaultMaxNewTokens: flags.maxNewTokens !== undefined ? Math.min(maxDefaultNew, flags.maxNewTokens) : undefined,
        },
        adapterDirs: flags.adapterDir,
        logger,
        shutdownDeadlineMs: flags.shutdownDeadlineMs,
        batchGatherMs: flags.batchGatherMs,
        prefillBatchTokens: flags.prefillBatchTokens,
        ...security,
      });
      await serveUntilSignal(logger, () => server.close());
    });
  return serve;
}
