// Starts the inference service: opens the expert/amateur pair (refusing a mismatched one),
// wires the scheduler, adapter registry and metrics, serves InferenceService and
// AdapterService with health and reflection on one gRPC port and Prometheus metrics on
// another, and shuts all of it down gracefully. Used by `lightreasoner serve inference`
// and by the tests, which start several servers in one process.
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import type { Logger } from "pino";
import { accessPolicy, addService, logPolicy, scrapeRefusal, serverCredentials, tlsMode } from "#core/grpc/adapter.ts";
import type { AccessOptions, ServerTls } from "#core/grpc/adapter.ts";
import { addHealthAndReflection } from "#core/grpc/operability.ts";
import { AdapterService } from "#core/gen/lightreasoner/v1/adapter_pb.ts";
import { InferenceService } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { AdapterRegistry } from "./engine/adapter-registry.ts";
import { openModelPair } from "./engine/model-pair.ts";
import { DEFAULT_BATCH_GATHER, PREFILL_TOKENS_PER_BATCH, Scheduler } from "./engine/scheduler.ts";
import type { ExecutionProviderChoice } from "./model/execution-provider.ts";
import { PairSummaryGraph } from "./model/pair-summary-graph.ts";
import { SamplingGraph } from "./model/sampling-graph.ts";
import { missingProcessSettings } from "#inference/model/process-settings.ts";
import { InferenceMetrics } from "./metrics.ts";
import { serveMetrics } from "#core/metrics/http-endpoint.ts";
import type { MetricsEndpoint } from "#core/metrics/http-endpoint.ts";
import { adapterHandlers } from "./server/adapter-service.ts";
import { CallSlots, instrumented } from "./server/calls.ts";
import type { ServingContext } from "./server/context.ts";
import { inferenceHandlers } from "./server/inference-service.ts";
import { InvalidServerConfigError, resolveLimits } from "./server/limits.ts";
import type { ServerLimits } from "./server/limits.ts";

export interface InferenceServerOptions {
  expertDir: string;
  amateurDir: string;
  /** Interface to listen on (default 127.0.0.1: loopback only); the metrics port listens on the same one. */
  host?: string;
  /** gRPC port; 0 lets the OS pick one (default 50051). */
  port?: number;
  /** Prometheus port; 0 lets the OS pick one (default 9464). */
  metricsPort?: number;
  executionProvider?: ExecutionProviderChoice;
  /** ONNX Runtime intra-op threads per session (default: ONNX Runtime's choice). */
  threads?: number;
  /** ONNX Runtime's weight prepacking on the CPU (default on; off starts faster and decodes slower). */
  prepack?: boolean;
  /** Keep ONNX Runtime's prepacked weights here between starts (see model/prepacked-cache.ts); default: pack at every start. */
  prepackedCacheDir?: string;
  limits?: Partial<ServerLimits>;
  /** Directories LoadAdapter may read from; none disables loading by path. */
  adapterDirs?: string[];
  logger?: Logger;
  /** Most milliseconds a SIGTERM-style close waits for running streams by default. */
  shutdownDeadlineMs?: number;
  /** Most milliseconds a batch waits for sequences whose reader is behind (0: never; default 50, see BatchGather). */
  batchGatherMs?: number;
  /** Prompt tokens prefilled in one batch, and the chunk a longer prompt is read in (default PREFILL_TOKENS_PER_BATCH): fewer hold the event loop for shorter runs. */
  prefillBatchTokens?: number;
  /** Which calls need a credential and what counts as one (default: mutating calls refused, see access.ts). */
  access?: AccessOptions;
  /** Serve gRPC over TLS (mTLS with a client CA); default plain text. */
  tls?: ServerTls | null;
}

export interface InferenceServer {
  /** "host:port" of the gRPC endpoint, as a client dials it. */
  address: string;
  port: number;
  metricsPort: number;
  limits: ServerLimits;
  /**
   * Stops accepting calls, reports NOT_SERVING, lets running streams finish until the
   * deadline, cancels the rest, and releases every model session. Safe to call twice.
   */
  close(deadlineMs?: number): Promise<void>;
}

export const DEFAULT_GRPC_PORT = 50051;
export const DEFAULT_METRICS_PORT = 9464;
const DEFAULT_SHUTDOWN_DEADLINE_MS = 10_000;
/** Room above one 1 MiB adapter chunk (and a long prompt) for the rest of a message. */
const MAX_MESSAGE_BYTES = 8 * 1024 * 1024;

export async function startInferenceServer(options: InferenceServerOptions): Promise<InferenceServer> {
  const logger = options.logger ?? pino({ name: "lightreasoner-inference" });
  const limits = resolveLimits(options.limits);
  const prefillBatchTokens = options.prefillBatchTokens ?? PREFILL_TOKENS_PER_BATCH;
  if (!(Number.isInteger(prefillBatchTokens) && prefillBatchTokens > 0)) {
    throw new InvalidServerConfigError(`prefillBatchTokens: must be a positive integer, got ${prefillBatchTokens}`);
  }
  const host = options.host ?? "127.0.0.1";
  // Checked before the models load, so a bad credential setting fails fast.
  const access = accessPolicy({ ...options.access, clientCertificates: Boolean(options.tls?.clientCa) });
  const credentials = serverCredentials(options.tls);
  const sessionOptions = { executionProvider: options.executionProvider ?? "auto", threads: options.threads, prepack: options.prepack, prepackedCacheDir: options.prepackedCacheDir, log: (message: string) => logger.info(message) };

  const pair = await openModelPair(options.expertDir, options.amateurDir, sessionOptions);
  logger.info({ expert: pair.expert.dir, amateur: pair.amateur.dir, vocabSize: pair.expert.vocabSize }, "expert and amateur share one tokenizer");
  // What the start has opened, released newest first: by a start that fails before the server
  // listens, and by close() once it has drained.
  const undo: (() => unknown)[] = [() => pair.expert.session.release(), () => pair.amateur.session.release()];
  /** Runs every undo step, newest first, each even if one before it failed; returns the failures. */
  const unwind = async (): Promise<unknown[]> => {
    const failures: unknown[] = [];
    for (const step of undo.splice(0).reverse()) await Promise.resolve().then(step).catch((err: unknown) => failures.push(err));
    return failures;
  };
  try {
    return await listen();
  } catch (err) {
    // The failure to report is the start's, not a release's.
    await unwind();
    throw err;
  }

  async function listen(): Promise<InferenceServer> {
    // SPARSE summaries and float16 rounding run on the models' execution provider (on CPU, on one thread: SUMMARY_THREADS).
    const pairGraphs = await PairSummaryGraph.open(pair.expert.vocabSize, { ...sessionOptions, threads: undefined });
    undo.push(() => pairGraphs.release());
    // The scheduler comes after the metrics it reports to; until then its gauges read zero.
    let built: Scheduler | undefined;
    const metrics = new InferenceMetrics(() => built?.load ?? { running: 0, paused: 0, waiting: 0 });
    // Temperature and nucleus sampling on the CPU (the rows are host arrays), one thread: a draw
    // still holds the event loop, about 1-2 ms instead of core/math's 3-9; the metrics count where each ran.
    const sampling = await SamplingGraph.open(pair.expert.vocabSize, { ...sessionOptions, executionProvider: "cpu", threads: undefined }, (by) => metrics.sampledTokens.inc({ by }));
    undo.push(() => sampling.release());
    const maxContextTokens = Math.min(pair.expert.description.maxContextTokens, pair.amateur.description.maxContextTokens);
    const adapters = new AdapterRegistry(pair.expert, {
      allowedDirs: options.adapterDirs,
      maxAdapterBytes: limits.maxAdapterBytes,
      maxResidentBytes: limits.maxResidentAdapterBytes,
      observer: metrics.adapterObserver((version, previous) => logger.info({ version: version || "base", previous: previous || "base" }, "active adapter changed")),
    });
    undo.push(() => adapters.close());
    const scheduler = new Scheduler(adapters, pair.amateur.session, pair.expert.tokenizer, {
      maxBatchSize: limits.maxBatchSize,
      maxSequences: Math.max(limits.maxBatchSize, limits.maxStreams * limits.maxTrajectoriesPerStream),
      maxContextTokens,
      gather: { fraction: DEFAULT_BATCH_GATHER.fraction, maxMs: options.batchGatherMs ?? DEFAULT_BATCH_GATHER.maxMs },
      prefillTokensPerBatch: prefillBatchTokens,
    }, metrics.observer(), sampling);
    built = scheduler;
    undo.push(() => scheduler.shutdown(0));

    const draining = new AbortController();
    const ctx: ServingContext = {
      pair,
      vocabSize: pair.expert.vocabSize,
      maxContextTokens,
      prefillTokens: prefillBatchTokens,
      scheduler,
      pairGraphs,
      adapters,
      limits,
      metrics,
      logger,
      slots: new CallSlots(limits.maxStreams, (active) => metrics.activeStreams.set(active)),
      draining: draining.signal,
    };

    const server = new grpc.Server({ "grpc.max_receive_message_length": MAX_MESSAGE_BYTES, "grpc.max_send_message_length": MAX_MESSAGE_BYTES });
    undo.push(() => server.forceShutdown());
    const errorLogger = { error: (details: Record<string, unknown>, message: string) => logger.error(details, message), warn: (details: Record<string, unknown>, message: string) => logger.warn(details, message) };
    addService(server, InferenceService, instrumented(InferenceService, inferenceHandlers(ctx), metrics, logger), errorLogger, access);
    addService(server, AdapterService, instrumented(AdapterService, adapterHandlers(ctx), metrics, logger), errorLogger, access);
    const health = addHealthAndReflection(server, [InferenceService, AdapterService]);

    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${host}:${options.port ?? DEFAULT_GRPC_PORT}`, credentials, (err, bound) => (err ? reject(err) : resolve(bound))),
    );
    const metricsEndpoint: MetricsEndpoint = await serveMetrics(metrics.registry, host, options.metricsPort ?? DEFAULT_METRICS_PORT, (authorization) => scrapeRefusal(access, authorization));
    undo.push(() => metricsEndpoint.close());
    const dialHost = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host.includes(":") ? `[${host}]` : host;
    logger.info({ host, port, metricsPort: metricsEndpoint.port, limits, prefillBatchTokens, executionProvider: pair.expert.session.provider, tls: tlsMode(options.tls) }, `inference server listening on ${host}:${port} (metrics on :${metricsEndpoint.port}/metrics)`);
    for (const { recommended, why } of missingProcessSettings()) logger.info({ recommended }, why);
    logPolicy(logger, access);

    let closing: Promise<void> | null = null;
    const close = async (deadlineMs: number) => {
      logger.info({ deadlineMs, ...scheduler.load }, "shutting down: NOT_SERVING, no new requests, running streams get until the deadline");
      // Health says NOT_SERVING and handlers refuse new work while the running streams finish.
      draining.abort();
      for (const service of ["", InferenceService.typeName, AdapterService.typeName]) health.setStatus(service, "NOT_SERVING");
      await scheduler.shutdown(deadlineMs);
      // Every sequence has finished or been cancelled; the calls get a moment to say so.
      const callsDone = new Promise<"done">((resolve) => server.tryShutdown(() => resolve("done")));
      const grace = new Promise<"late">((resolve) => setTimeout(() => resolve("late"), 1000).unref());
      if ((await Promise.race([callsDone, grace])) === "late") {
        logger.warn("calls still open after the deadline; closing them");
        server.forceShutdown();
      }
      // The scheduler and the server are down; release what the start opened.
      const failures = await unwind();
      metrics.registry.clear();
      if (failures.length > 0) throw failures[0];
      logger.info("inference server stopped");
    };

    return {
      address: `${dialHost}:${port}`,
      port,
      metricsPort: metricsEndpoint.port,
      limits,
      close: (deadlineMs = options.shutdownDeadlineMs ?? DEFAULT_SHUTDOWN_DEADLINE_MS) => (closing ??= close(deadlineMs)),
    };
  }
}
