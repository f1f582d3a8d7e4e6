// The services `lightreasoner run` starts as child processes of its own, on loopback ports
// the OS picks: each is the same `lightreasoner serve ...` an operator runs. Ready means the
// service logged where it listens (pino's JSON line with port and metricsPort); stopped
// means it exited after SIGTERM, with its exit code checked. The credential goes to them
// through the environment, never the command line, which other users of the machine can read.
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { processMemory } from "#core/metrics/process-memory.ts";

const BIN = fileURLToPath(new URL("../../bin/lightreasoner.mjs", import.meta.url));
const START_TIMEOUT_MS = 120_000;

export interface ServiceProcess {
  name: string;
  /** "127.0.0.1:port" of its gRPC endpoint. */
  address: string;
  metricsPort: number;
  pid: number;
  /** SIGTERM, then the exit code (rejects if it does not exit within the timeout). */
  stop(timeoutMs?: number): Promise<number>;
  /** The most resident memory the process has held so far (Linux's VmHWM), or null where /proc has no such line. */
  peakRssBytes(): number | null;
}

/**
 * Starts `node <nodeFlags> lightreasoner serve <args>` on 127.0.0.1 with OS-chosen ports;
 * warnings and errors go to stderr. `env` is added to this process's environment (the token,
 * see security-flags.ts).
 */
export async function startService(name: string, args: string[], env: Record<string, string> = {}, nodeFlags: readonly string[] = []): Promise<ServiceProcess> {
  const child = spawn(process.execPath, [...nodeFlags, BIN, "serve", ...args, "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--log-level", "info"], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  const stderr: string[] = [];
  child.stderr!.on("data", (chunk: Buffer) => {
    stderr.push(chunk.toString());
    process.stderr.write(`[${name}] ${chunk.toString()}`);
  });
  const exited = new Promise<number>((resolve) => child.once("exit", (code, signal) => resolve(code ?? (signal ? 128 : 1))));
  const listening = new Promise<{ port: number; metricsPort: number }>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on("line", (line) => {
      const entry = parseLogLine(line);
      if (!entry) return;
      if (entry.level >= 40) process.stderr.write(`[${name}] ${entry.msg}\n`);
      if (typeof entry.port === "number" && typeof entry.metricsPort === "number") resolve({ port: entry.port, metricsPort: entry.metricsPort });
    });
    exited.then((code) => reject(new Error(`${name} exited with code ${code} before it was ready${stderr.length ? `: ${stderr.join("").trim().slice(-2000)}` : ""}`)));
    setTimeout(() => reject(new Error(`${name} was not ready within ${START_TIMEOUT_MS / 1000} s`)), START_TIMEOUT_MS).unref();
  });
  let ready: { port: number; metricsPort: number };
  try {
    ready = await listening;
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }
  return {
    name,
    address: `127.0.0.1:${ready.port}`,
    metricsPort: ready.metricsPort,
    pid: child.pid!,
    stop: (timeoutMs = 30_000) => stop(child, exited, name, timeoutMs),
    peakRssBytes: () => peakRssBytes(child.pid!),
  };
}

function peakRssBytes(pid: number): number | null {
  try {
    return processMemory(pid).peakRssBytes;
  } catch {
    return null;
  }
}

async function stop(child: ChildProcess, exited: Promise<number>, name: string, timeoutMs: number): Promise<number> {
  if (child.exitCode !== null) return exited;
  child.kill("SIGTERM");
  const late = new Promise<"late">((resolve) => setTimeout(() => resolve("late"), timeoutMs).unref());
  const outcome = await Promise.race([exited, late]);
  if (outcome === "late") {
    child.kill("SIGKILL");
    throw new Error(`${name} did not exit within ${timeoutMs / 1000} s of SIGTERM`);
  }
  return outcome;
}

interface LogEntry {
  level: number;
  msg: string;
  port?: unknown;
  metricsPort?: unknown;
}

function parseLogLine(line: string): LogEntry | null {
  if (!line.startsWith("{")) return null;
  try {
    const entry = JSON.parse(line) as LogEntry;
    return typeof entry.level === "number" ? entry : null;
  } catch {
    return null;
  }
}
