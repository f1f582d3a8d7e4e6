// Child processes of the benchmark: the inference service started exactly as a user starts
// it (`lightreasoner serve inference`) and the benchmark's own helper processes
// (`lightreasoner bench-worker ...`). Their memory is read with #core/metrics/process-memory.ts.
import { execFileSync, spawn } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import type { ChildProcess } from "node:child_process";
import { CLI_ENTRY, REPO_ROOT } from "./paths.ts";
import type { ProcessMemory } from "#core/metrics/process-memory.ts";
import { processMemory } from "#core/metrics/process-memory.ts";
import { RECOMMENDED_NODE_FLAGS, recommendedNodeFlagsIn } from "#inference/model/process-settings.ts";

export class BenchProcessError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BenchProcessError";
  }
}

/** A child whose stdout is JSON lines (pino logs, worker results), collected as they come. */
export interface JsonLinesChild {
  child: ChildProcess;
  pid: number;
  lines: Record<string, unknown>[];
  stderr: () => string;
  exited: Promise<number | null>;
  /** Resolves with the first line `match` accepts; rejects when the child exits first or after `timeoutMs`. */
  waitFor(match: (line: Record<string, unknown>) => boolean, timeoutMs: number, what: string): Promise<Record<string, unknown>>;
}

/** Runs `lightreasoner <args>` as a child process of this one, with the recommended Node flags this one has (process-settings.ts). */
export function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}): JsonLinesChild {
  const child = spawn(process.execPath, [...recommendedNodeFlagsIn(), CLI_ENTRY, ...args], { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  const lines: Record<string, unknown>[] = [];
  const stderrChunks: string[] = [];
  const waiters = new Set<() => void>();
  let buffered = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    buffered += chunk.toString();
    const parts = buffered.split("\n");
    buffered = parts.pop()!;
    for (const line of parts) {
      if (!line.trim().startsWith("{")) continue;
      try {
        lines.push(JSON.parse(line));
      } catch {
        // Not one of ours (a stray print); the waiters only look for JSON objects.
      }
    }
    for (const wake of waiters) wake();
  });
  child.stderr!.on("data", (chunk: Buffer) => stderrChunks.push(chunk.toString()));
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => {
      exitCode = code;
      for (const wake of waiters) wake();
      resolve(code);
    }),
  );
  const stderr = () => stderrChunks.join("").slice(-4000);
  const waitFor = (match: (line: Record<string, unknown>) => boolean, timeoutMs: number, what: string) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => finish(new BenchProcessError(`${what}: nothing after ${timeoutMs} ms; stderr: ${stderr()}`)), timeoutMs);
      const check = () => {
        const found = lines.find(match);
        if (found) finish(undefined, found);
        else if (exitCode !== undefined) finish(new BenchProcessError(`${what}: the process exited with code ${exitCode} first; stderr: ${stderr()}`));
      };
      const finish = (err?: Error, line?: Record<string, unknown>) => {
        clearTimeout(timer);
        waiters.delete(check);
        if (err) reject(err);
        else resolve(line!);
      };
      waiters.add(check);
      check();
    });
  return { child, pid: child.pid!, lines, stderr, exited, waitFor };
}

/**
 * CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat: every thread
 * it ever ran, exited ones included, in clock ticks (10 ms), so for spans of seconds (a
 * start-up, where threads that come and go took 1.8 of the 0.5B-shaped service's 15.6 s). With
 * `mainThreadOnly`, its main thread's alone.
 */
export function processCpuSeconds(pid: number, mainThreadOnly = false): number {
  const fields = readFileSync(mainThreadOnly ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * CPU seconds the threads a process has now have run: the sum of
 * /proc/<pid>/task/<tid>/schedstat over them, nanoseconds on the CPU, so exact for runs of a
 * fraction of a second where processCpuSeconds' ticks are not. Threads that have exited are
 * not counted: for a span in which the process keeps its threads (a serving process's steady
 * state), not a start-up.
 */
export function liveThreadsCpuSeconds(pid: number): number {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch (err) {
    throw new BenchProcessError(`/proc/${pid}/task: cannot list the process's threads (${(err as Error).message}); CPU time needs Linux`);
  }
  let nanoseconds = 0;
  for (const task of tasks) {
    try {
      nanoseconds += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // The thread exited between the listing and the read: its time is gone either way.
    }
  }
  // A running process has spent some time on a CPU; none read means no schedstat here (a
  // kernel without CONFIG_SCHED_INFO reads 0), not a process that cost nothing.
  if (!(nanoseconds > 0)) throw new BenchProcessError(`/proc/${pid}/task/<tid>/schedstat: no CPU time readable for the process's threads; CPU time needs Linux with scheduler statistics`);
  return nanoseconds / 1e9;
}

/**
 * Runs a standalone bench script's measuring half, `node <flags> <script> <args> --child`, and
 * returns the JSON object it printed last. The child gets this process's loader flags (tsx),
 * `nodeFlags` in place of its recommended ones (by default the same ones), and `env`: how a
 * script compares start-up settings (output-copy.ts, gc-threads.ts).
 */
export function runScriptChild<T>(script: string, args: readonly string[], start: { nodeFlags?: readonly string[]; env?: NodeJS.ProcessEnv } = {}): T {
  const loaderFlags = process.execArgv.filter((flag) => !RECOMMENDED_NODE_FLAGS.includes(flag));
  const nodeFlags = start.nodeFlags ?? recommendedNodeFlagsIn();
  const out = execFileSync(process.execPath, [...nodeFlags, ...loaderFlags, script, ...args, "--child"], { env: start.env ?? process.env, encoding: "utf8" });
  return JSON.parse(out.trim().split("\n").pop()!) as T;
}

/** Sends SIGTERM and waits for the exit; SIGKILL after `graceMs`. */
export async function stopChild(running: JsonLinesChild, graceMs = 15_000): Promise<number | null> {
  if (running.child.exitCode !== null || running.child.signalCode !== null) return running.child.exitCode;
  running.child.kill("SIGTERM");
  const timer = setTimeout(() => running.child.kill("SIGKILL"), graceMs);
  try {
    return await running.exited;
  } finally {
    clearTimeout(timer);
  }
}

export interface ServedInference {
  address: string;
  /** Port of its Prometheus /metrics endpoint. */
  metricsPort: number;
  pid: number;
  /** Seconds from spawn until the service logged that it listens. */
  startSeconds: number;
  /** The service's log lines until it listened, each with the seconds since spawn (its per-stage start-up times). */
  startLog: { seconds: number; msg: string }[];
  memory(): ProcessMemory;
  stop(): Promise<void>;
}

/** Starts `lightreasoner serve inference` on loopback with OS-chosen ports and waits until it listens. */
export async function serveInference(options: {
  expertDir: string;
  amateurDir: string;
  maxBatchSize: number;
  maxNewTokens: number;
  threads?: number;
  batchGatherMs?: number;
  prepackedCacheDir?: string;
  prefillBatchTokens?: number;
}): Promise<ServedInference> {
  const started = performance.now();
  const spawnedAt = Date.now();
  const args = ["serve", "inference", "--expert", options.expertDir, "--amateur", options.amateurDir, "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"];
  args.push("--execution-provider", "cpu", "--max-batch-size", String(options.maxBatchSize), "--max-new-tokens", String(options.maxNewTokens), "--log-level", "info");
  if (options.threads !== undefined) args.push("--threads", String(options.threads));
  if (options.batchGatherMs !== undefined) args.push("--batch-gather-ms", String(options.batchGatherMs));
  if (options.prepackedCacheDir !== undefined) args.push("--prepacked-cache", options.prepackedCacheDir);
  if (options.prefillBatchTokens !== undefined) args.push("--prefill-batch-tokens", String(options.prefillBatchTokens));
  const running = spawnCli(args);
  let listening: Record<string, unknown>;
  try {
    listening = await running.waitFor((l) => typeof l.msg === "string" && l.msg.startsWith("inference server listening"), 300_000, "lightreasoner serve inference");
  } catch (err) {
    await stopChild(running, 1000);
    throw err;
  }
  return {
    address: `127.0.0.1:${listening.port as number}`,
    metricsPort: listening.metricsPort as number,
    pid: running.pid,
    startSeconds: (performance.now() - started) / 1000,
    startLog: running.lines
      .slice(0, running.lines.indexOf(listening) + 1)
      .filter((l) => typeof l.msg === "string" && typeof l.time === "number")
      .map((l) => ({ seconds: ((l.time as number) - spawnedAt) / 1000, msg: l.msg as string })),
    memory: () => processMemory(running.pid),
    stop: async () => {
      const code = await stopChild(running);
      if (code !== 0) throw new BenchProcessError(`lightreasoner serve inference exited with code ${code}; stderr: ${running.stderr()}`);
    },
  };
}

/** The service's Prometheus exposition, as a scrape reads it. */
async function scrape(metricsPort: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
}

/** Sum and count of the service's batch-size histogram for one model, from its /metrics text. */
export async function batchSizeTotals(metricsPort: number, model: "expert" | "amateur"): Promise<{ sum: number; count: number }> {
  const text = await scrape(metricsPort);
  const value = (series: string) => {
    const match = new RegExp(`^lightreasoner_inference_batch_size_${series}\\{model="${model}"\\} (\\S+)$`, "m").exec(text);
    if (!match) throw new BenchProcessError(`/metrics of the inference service has no lightreasoner_inference_batch_size_${series} for ${model}`);
    return Number(match[1]);
  };
  return { sum: value("sum"), count: value("count") };
}

/** prom-client's `nodejs_eventloop_lag_max_seconds`: the longest hold since the previous scrape, which each scrape resets. */
async function eventLoopMaxSeconds(metricsPort: number): Promise<number> {
  const match = /^nodejs_eventloop_lag_max_seconds (\S+)$/m.exec(await scrape(metricsPort));
  if (!match) throw new BenchProcessError("/metrics of the inference service has no nodejs_eventloop_lag_max_seconds");
  return Number(match[1]);
}

/**
 * Runs `work` against the service and returns its result with the longest the service's
 * event loop was held meanwhile, in seconds (a scrape before resets the reading). While it is
 * held no gRPC message moves, and health checks and scrapes wait.
 */
export async function withEventLoopHold<T>(metricsPort: number, work: () => Promise<T>): Promise<{ result: T; eventLoopHoldSeconds: number }> {
  await eventLoopMaxSeconds(metricsPort);
  const result = await work();
  return { result, eventLoopHoldSeconds: await eventLoopMaxSeconds(metricsPort) };
}

/**
 * Runs `lightreasoner bench-worker <task>` with a JSON argument and returns the JSON line it
 * prints with `result`, plus the child's peak resident memory read just before it exits.
 */
export async function runWorker<T>(task: string, input: unknown, timeoutMs: number): Promise<{ result: T; memory: ProcessMemory }> {
  const running = spawnCli(["bench-worker", task, JSON.stringify(input)]);
  try {
    const line = await running.waitFor((l) => "result" in l || "error" in l, timeoutMs, `bench worker ${task}`);
    if ("error" in line) throw new BenchProcessError(`bench worker ${task} failed: ${String(line.error)}`);
    const { result, memory } = line as { result: T; memory: ProcessMemory };
    const code = await running.exited;
    if (code !== 0) throw new BenchProcessError(`bench worker ${task} exited with code ${code}; stderr: ${running.stderr()}`);
    return { result, memory };
  } finally {
    await stopChild(running, 2000);
  }
}
