// Real processes for the deploy tests: inference replicas started through the `lightreasoner`
// binary with the arguments the deploy files ship (paths and ports made local), a Prometheus
// server from the Debian package on a temporary configuration, and small readers for their
// HTTP APIs. Every process is killed when the test file ends, whatever happened.
import { spawn, spawnSync } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { stringify } from "yaml";
import { root } from "./deploy-files.ts";

export { root };
export const BIN = join(root, "bin", "lightreasoner.mjs");

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** True when `command args` runs and exits 0 (a tool is installed). */
export function runs(command: string, args: string[]): boolean {
  return spawnSync(command, args, { stdio: "ignore" }).status === 0;
}

const started = new Set<ChildProcess>();
/** Kills every process these helpers started and that is still running (for afterAll). */
export function killAll(): void {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  started.clear();
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Proc {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<Exit>;
}

export function startProcess(command: string, args: string[], options: { cwd?: string } = {}): Proc {
  const child = spawn(command, args, { cwd: options.cwd ?? root, stdio: ["ignore", "pipe", "pipe"] });
  started.add(child);
  let out = "";
  let err = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<Exit>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  return { child, stdout: () => out, stderr: () => err, exited };
}

/** Runs a command to its end; rejects with its output when it exits non-zero. */
export async function runToEnd(command: string, args: string[], options: { cwd?: string } = {}): Promise<{ stdout: string; stderr: string }> {
  const p = startProcess(command, args, options);
  const exit = await p.exited;
  if (exit.code !== 0) throw new Error(`${command} ${args.join(" ")} exited ${exit.code ?? exit.signal}:\n${p.stderr()}${p.stdout()}`);
  return { stdout: p.stdout(), stderr: p.stderr() };
}

// ---------------------------------------------------------------------------------------
// Shipped arguments, made local

/** The token of the services started from the shipped commands; clients of mutating calls present it. */
export const LOCAL_TOKEN = randomBytes(24).toString("base64url");
let tokenFile: string | null = null;

function localTokenFile(): string {
  if (tokenFile === null) {
    const dir = mkdtempSync(join(tmpdir(), "lr-token-"));
    process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
    tokenFile = join(dir, "token");
    writeFileSync(tokenFile, `${LOCAL_TOKEN}\n`, { mode: 0o600 });
  }
  return tokenFile;
}

/**
 * Shipped `serve inference` arguments for a process here: image paths (/app/...) become
 * repository paths, and the ports and host are replaced (ports 0: the OS picks).
 */
export function localArgs(shipped: string[], replace: Record<string, string>): string[] {
  const args = shipped.map((a) => (a.startsWith("/app/") ? join(root, a.slice("/app/".length)) : a));
  // The deployment's Secret becomes a file of this test process, holding LOCAL_TOKEN.
  const secret = args.indexOf("--auth-token-file");
  if (secret >= 0) args[secret + 1] = localTokenFile();
  for (const [flag, value] of Object.entries(replace)) {
    const i = args.indexOf(flag);
    if (i >= 0) args[i + 1] = value;
    else args.push(flag, value);
  }
  return args;
}

// ---------------------------------------------------------------------------------------
// Services (inference replicas, the trainer)

export interface Service extends Proc {
  host: string;
  port: number;
  metricsPort: number;
  address: string;
}
export type Replica = Service;

/**
 * Starts `lightreasoner <args>` (a `serve ...` command) and waits for the log line that says
 * it listens (its message starts with `listening`), which carries the ports it bound.
 */
export async function startService(args: string[], listening: string, timeoutMs = 30_000): Promise<Service> {
  const p = startProcess(process.execPath, [BIN, ...args]);
  const until = Date.now() + timeoutMs;
  for (;;) {
    const line = p
      .stdout()
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => typeof l.msg === "string" && l.msg.startsWith(listening));
    if (line) {
      const host = String(line.host);
      return { ...p, host, port: Number(line.port), metricsPort: Number(line.metricsPort), address: `${host}:${line.port}` };
    }
    if (p.child.exitCode !== null || Date.now() > until) {
      p.child.kill("SIGKILL");
      throw new Error(`the service did not start (${args.join(" ")}):\n${p.stderr()}${p.stdout()}`);
    }
    await sleep(50);
  }
}

/** An inference replica: `lightreasoner serve inference <args>`. */
export const startReplica = (args: string[]) => startService(args, "inference server listening");

/** One series of a /metrics text, summed over label sets that contain `labels`. */
export async function scrapeValue(host: string, metricsPort: number, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`http://${host}:${metricsPort}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3]);
  }
  return sum;
}

// ---------------------------------------------------------------------------------------
// Prometheus

export async function freePort(host = "127.0.0.1"): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, host, resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface PrometheusServer extends Proc {
  url: string;
  query(expr: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]>;
  get(path: string): Promise<any>;
}

/** Starts the Debian `prometheus` binary on `config` (an object written as YAML) and waits until ready. */
export async function startPrometheus(config: unknown, dir: string): Promise<PrometheusServer> {
  mkdirSync(dir, { recursive: true });
  const configFile = join(dir, "prometheus.yml");
  writeFileSync(configFile, stringify(config));
  const port = await freePort();
  const p = startProcess("prometheus", [
    `--config.file=${configFile}`,
    `--storage.tsdb.path=${join(dir, "data")}`,
    `--web.listen-address=127.0.0.1:${port}`,
    "--log.level=warn",
  ]);
  const url = `http://127.0.0.1:${port}`;
  const until = Date.now() + 30_000;
  for (;;) {
    const ready = await fetch(`${url}/-/ready`).then((r) => r.ok, () => false);
    if (ready) break;
    if (p.child.exitCode !== null || Date.now() > until) {
      p.child.kill("SIGKILL");
      throw new Error(`prometheus did not become ready:\n${p.stderr()}`);
    }
    await sleep(100);
  }
  const get = async (path: string) => {
    const body = (await (await fetch(`${url}${path}`)).json()) as { status: string; data: unknown; error?: string };
    if (body.status !== "success") throw new Error(`${path}: ${body.error}`);
    return body.data;
  };
  return {
    ...p,
    url,
    get,
    query: async (expr) => ((await get(`/api/v1/query?query=${encodeURIComponent(expr)}`)) as { result: any[] }).result,
  };
}

/** Polls until `check` passes (returns true) or fails with the last state it saw. */
export async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
    await sleep(200);
  }
}
