// Starts the trainer service: loads the expert (the base the adapters are trained on) and the
// runs directory, picks the TensorFlow.js backend, serves TrainerService with health and
// reflection on one gRPC port and Prometheus metrics on another, and on close cancels
// running runs (they stay resumable) before stopping. Used by `lightreasoner serve trainer`
// and by the tests.
import { basename, resolve } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import type { Logger } from "pino";
import { accessPolicy, addService, isLoopbackAddress, logPolicy, scrapeRefusal, serverCredentials, tlsMode } from "#core/grpc/adapter.ts";
import type { AccessOptions, ClientSecurity, ServerTls } from "#core/grpc/adapter.ts";
import { addHealthAndReflection } from "#core/grpc/operability.ts";
import { TrainerService } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import { loadModelDir, modelFingerprint } from "#core/formats/model-dir.ts";
import { serveMetrics } from "#core/metrics/http-endpoint.ts";
import type { MetricsEndpoint } from "#core/metrics/http-endpoint.ts";
import { describeBackendChoice, selectBackend } from "./model/backend.ts";
import type { BackendKind } from "./model/backend.ts";
import { chooseLoraEngine, describeEngineChoice } from "./training/gradient-engine.ts";
import { TrainerMetrics } from "./metrics.ts";
import { parseEndpointTargets } from "./sampling/targets.ts";
import { RunManager } from "./runs/run-manager.ts";
import { trainerHandlers } from "./server/trainer-service.ts";

export interface TrainerServerOptions {
  /** The expert the inference endpoints serve (its fingerprint must match theirs). */
  expertDir: string;
  /** Endpoints of runs whose config names none ("host:port" or "dns:///name:port"). */
  inferenceTargets: readonly string[];
  /** Further endpoints a run may name; a run naming one on neither list gets PERMISSION_DENIED. */
  allowedInferenceTargets?: readonly string[];
  /** Where runs keep their record, samples, checkpoints and adapters. */
  runsDir: string;
  /** Interface to listen on (default 127.0.0.1: loopback only); the metrics port listens on the same one. */
  host?: string;
  /** gRPC port; 0 lets the OS pick one (default 50052). */
  port?: number;
  /** Prometheus port; 0 lets the OS pick one (default 9465). */
  metricsPort?: number;
  /** tfjs backend (default LR_TFJS_BACKEND or the best available). */
  backend?: BackendKind | "auto";
  /** How long StartRun waits for an endpoint to answer (default 10 s). */
  connectTimeoutMs?: number;
  /** Most runs running at once; StartRun beyond it is RESOURCE_EXHAUSTED (default DEFAULT_MAX_CONCURRENT_RUNS). */
  maxConcurrentRuns?: number;
  logger?: Logger;
  /** Which calls need a credential and what counts as one (default: mutating calls refused, see access.ts). */
  access?: AccessOptions;
  /** Serve gRPC over TLS (mTLS with a client CA); default plain text. */
  tls?: ServerTls | null;
  /** How the trainer reaches the inference endpoints: TLS and the token it presents. */
  inferenceSecurity?: ClientSecurity;
}

export interface TrainerServer {
  /** "host:port" of the gRPC endpoint, as a client dials it. */
  address: string;
  port: number;
  metricsPort: number;
  tfjsBackend: string;
  /** What computes LoRA gradients for every run (gradient-engine.ts). */
  trainingEngine: string;
  runs: RunManager;
  /** Cancels running runs (resumable), stops serving and closes the metrics port. Safe to call twice. */
  close(): Promise<void>;
}

export const DEFAULT_TRAINER_GRPC_PORT = 50052;
export const DEFAULT_TRAINER_METRICS_PORT = 9465;

export async function startTrainerServer(options: TrainerServerOptions): Promise<TrainerServer> {
  const logger = options.logger ?? pino({ name: "lightreasoner-trainer" });
  const host = options.host ?? "127.0.0.1";
  const access = accessPolicy({ ...options.access, clientCertificates: Boolean(options.tls?.clientCa) });
  const credentials = serverCredentials(options.tls);
  if (options.inferenceTargets.length > 0) parseEndpointTargets(options.inferenceTargets, "--inference");
  if (options.allowedInferenceTargets?.length) parseEndpointTargets(options.allowedInferenceTargets, "--allow-inference");
  const { config, weights } = loadModelDir(options.expertDir);
  const backend = await selectBackend({ force: options.backend });
  logger.info(describeBackendChoice(backend));
  const engine = chooseLoraEngine(backend, undefined);
  logger.info(describeEngineChoice(engine));

  let runs: RunManager | null = null;
  const metrics = new TrainerMetrics(() => runs?.counts() ?? { pending: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 });
  runs = RunManager.open({
    runsDir: options.runsDir,
    defaultEndpoints: options.inferenceTargets,
    allowedEndpoints: options.allowedInferenceTargets,
    tfjsBackend: backend.kind,
    trainingEngine: engine,
    expert: { dir: resolve(options.expertDir), name: basename(resolve(options.expertDir)), fingerprint: modelFingerprint(options.expertDir), config, weights },
    metrics,
    log: (message) => logger.info(message),
    connectTimeoutMs: options.connectTimeoutMs,
    inferenceSecurity: options.inferenceSecurity,
    maxConcurrentRuns: options.maxConcurrentRuns,
  });
  const manager = runs;

  const server = new grpc.Server();
  addService(server, TrainerService, trainerHandlers(manager), { error: (details, message) => logger.error(details, message), warn: (details, message) => logger.warn(details, message) }, access);
  const health = addHealthAndReflection(server, [TrainerService]);
  let port: number;
  let metricsEndpoint: MetricsEndpoint;
  try {
    port = await new Promise<number>((done, fail) =>
      server.bindAsync(`${host}:${options.port ?? DEFAULT_TRAINER_GRPC_PORT}`, credentials, (err, bound) => (err ? fail(err) : done(bound))),
    );
    metricsEndpoint = await serveMetrics(metrics.registry, host, options.metricsPort ?? DEFAULT_TRAINER_METRICS_PORT, (authorization) => scrapeRefusal(access, authorization));
  } catch (err) {
    server.forceShutdown();
    throw err;
  }
  const dialHost = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host.includes(":") ? `[${host}]` : host;
  logger.info({ host, port, metricsPort: metricsEndpoint.port, runsDir: resolve(options.runsDir), inference: options.inferenceTargets, tls: tlsMode(options.tls) }, `trainer listening on ${host}:${port} (metrics on :${metricsEndpoint.port}/metrics)`);
  logPolicy(logger, access);
  const plainText = options.inferenceSecurity?.token && !options.inferenceSecurity.tls ? options.inferenceTargets.filter((target) => !isLoopbackAddress(target)) : [];
  if (plainText.length > 0) logger.warn({ inference: plainText }, "the token goes to these inference endpoints in plain text: keep them on a private network, or give --inference-tls-ca");

  let closing: Promise<void> | null = null;
  const close = async () => {
    for (const service of ["", TrainerService.typeName]) health.setStatus(service, "NOT_SERVING");
    await manager.close();
    // Watchers got their runs' last event; give the calls a moment to end, then close them.
    const callsDone = new Promise<"done">((done) => server.tryShutdown(() => done("done")));
    const grace = new Promise<"late">((done) => setTimeout(() => done("late"), 1000).unref());
    if ((await Promise.race([callsDone, grace])) === "late") server.forceShutdown();
    await metricsEndpoint.close();
    metrics.registry.clear();
    logger.info("trainer stopped");
  };
  return {
    address: `${dialHost}:${port}`,
    port,
    metricsPort: metricsEndpoint.port,
    tfjsBackend: backend.kind,
    trainingEngine: engine.kind,
    runs: manager,
    close: () => (closing ??= close()),
  };
}
