// `lightreasoner serve trainer`: runs the trainer service (TrainerService over gRPC, runs
// kept under --runs-dir, Prometheus metrics) against one or more inference endpoints until
// SIGTERM or SIGINT; running runs are cancelled on the way out and stay resumable.
import type { Command } from "commander";
import { InvalidArgumentError, Option } from "commander";
import { pino } from "pino";
import { BACKEND_KINDS } from "#trainer/model/backend.ts";
import type { BackendKind } from "#trainer/model/backend.ts";
import { DEFAULT_TRAINER_GRPC_PORT, DEFAULT_TRAINER_METRICS_PORT, startTrainerServer } from "#trainer/main.ts";
import { DEFAULT_MAX_CONCURRENT_RUNS } from "#trainer/runs/run-manager.ts";
import { parseIntegerOption, parseListOption, parsePortOption } from "#cli/options.ts";
import { addClientSecurityOptions, addServerSecurityOptions, clientSecurity, serverSecurity } from "#cli/security-flags.ts";
import type { ServerSecurityFlags } from "#cli/security-flags.ts";
import { serveUntilSignal } from "./until-signal.ts";

interface ServeTrainerFlags extends ServerSecurityFlags {
  inferenceTlsCa?: string;
  inferenceTlsCert?: string;
  inferenceTlsKey?: string;
  inference: string[];
  expert: string;
  allowInference: string[];
  runsDir: string;
  host: string;
  port: number;
  metricsPort: number;
  backend: BackendKind | "auto";
  connectTimeoutMs: number;
  maxRuns: number;
  logLevel: string;
}

function parsePositiveRuns(value: string): number {
  const n = parseIntegerOption("--max-runs")(value);
  if (n < 1) throw new InvalidArgumentError(`--max-runs must be at least 1, got ${n}`);
  return n;
}

export function registerServeTrainer(serve: Command): void {
  const command = serve
    .command("trainer")
    .description("serve TrainerService: runs that sample from inference endpoints, select steps by KL, train LoRA and push adapters back")
    .requiredOption("--inference <addrs>", "comma-separated host:port or dns:///name:port inference endpoints, used by runs that name none", parseListOption)
    .option("--allow-inference <addrs>", "further endpoints a run may name (a run naming any endpoint on neither list is refused: the trainer presents its credential where a run points it)", parseListOption, [])
    .requiredOption("--expert <dir>", "the expert model directory the endpoints serve (fingerprints are compared)")
    .option("--runs-dir <dir>", "where runs keep their record, samples, checkpoints and adapters", "runs/trainer")
    .option("--host <host>", "interface to listen on (0.0.0.0: every interface)", "127.0.0.1")
    .option("--port <port>", "gRPC port (0: any free port, printed at start)", parsePortOption("--port"), DEFAULT_TRAINER_GRPC_PORT)
    .option("--metrics-port <port>", "Prometheus /metrics port (0: any free port)", parsePortOption("--metrics-port"), DEFAULT_TRAINER_METRICS_PORT)
    .addOption(new Option("--backend <kind>", "TensorFlow.js backend").choices(["auto", ...BACKEND_KINDS]).default("auto"))
    .option("--connect-timeout-ms <ms>", "how long StartRun waits for an endpoint to answer", parseIntegerOption("--connect-timeout-ms"), 10_000)
    .option("--max-runs <n>", "runs running at once (each adds its training memory to the shared expert); StartRun beyond it is refused with RESOURCE_EXHAUSTED", parsePositiveRuns, DEFAULT_MAX_CONCURRENT_RUNS)
    .option("--log-level <level>", "pino log level (trace, debug, info, warn, error)", "info");
  addServerSecurityOptions(command, "; the trainer also presents it to the inference endpoints");
  addClientSecurityOptions(command, { prefix: "inference-", token: false, what: "the inference endpoints" })
    .action(async (flags: ServeTrainerFlags) => {
      const { access, tls } = serverSecurity(flags);
      const inferenceSecurity = clientSecurity({ tlsCa: flags.inferenceTlsCa, tlsCert: flags.inferenceTlsCert, tlsKey: flags.inferenceTlsKey }, access.token ?? null, "inference-");
      const logger = pino({ name: "lightreasoner-trainer", level: flags.logLevel });
      const server = await startTrainerServer({
        expertDir: flags.expert,
        inferenceTargets: flags.inference,
        allowedInferenceTargets: flags.allowInference,
        runsDir: flags.runsDir,
        host: flags.host,
        port: flags.port,
        metricsPort: flags.metricsPort,
        backend: flags.backend,
        connectTimeoutMs: flags.connectTimeoutMs,
        maxConcurrentRuns: flags.maxRuns,
        logger,
        access,
        tls,
        inferenceSecurity,
      });
      await serveUntilSignal(logger, () => server.close());
    });
}
