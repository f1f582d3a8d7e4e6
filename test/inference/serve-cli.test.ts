// `lightreasoner serve inference` as a real process: it logs the port it bound (port 0),
// answers over gRPC and /metrics, rejects bad flags clearly, and on SIGTERM drains and
// exits 0; with --prepacked-cache a second start reads what the first wrote.
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "#core/grpc/adapter.ts";
import { InferenceService } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { writeTinyPair } from "./helpers.ts";
import type { TinyPair } from "./helpers.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
const entry = fileURLToPath(new URL("./serve-command.ts", import.meta.url));

interface Running {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  stderr: string[];
  exited: Promise<number | null>;
}

function serve(args: string[]): Running {
  const child = spawn(process.execPath, ["--import", "tsx", entry, "serve", "inference", ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  const lines: Record<string, unknown>[] = [];
  const stderr: string[] = [];
  let buffered = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    buffered += chunk.toString();
    const parts = buffered.split("\n");
    buffered = parts.pop()!;
    for (const line of parts) if (line.trim()) lines.push(JSON.parse(line));
  });
  child.stderr!.on("data", (chunk: Buffer) => stderr.push(chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, lines, stderr, exited };
}

async function logLine(running: Running, match: (line: Record<string, unknown>) => boolean, timeoutMs = 30_000): Promise<Record<string, unknown>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const found = running.lines.find(match);
    if (found) return found;
    if (Date.now() > until) throw new Error(`no such log line; stdout: ${JSON.stringify(running.lines)} stderr: ${running.stderr.join("")}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

let pair: TinyPair;
beforeAll(() => {
  pair = writeTinyPair();
});
afterAll(() => pair?.remove());

describe("lightreasoner serve inference", () => {
  it("serves on the port it logs, and drains and exits 0 on SIGTERM", async () => {
    const running = serve(["--expert", pair.expertDir, "--amateur", pair.amateurDir, "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--execution-provider", "cpu", "--max-batch-size", "4", "--max-new-tokens", "64", "--prefill-batch-tokens", "128"]);
    try {
      const listening = await logLine(running, (l) => typeof l.msg === "string" && l.msg.startsWith("inference server listening"));
      const port = listening.port as number;
      expect(port).toBeGreaterThan(0);
      expect(listening.limits).toMatchObject({ maxBatchSize: 4, maxNewTokens: 64, defaultMaxNewTokens: 64 });
      expect(listening.prefillBatchTokens).toBe(128);
      const client = createClient(InferenceService, `127.0.0.1:${port}`);
      const info = await client.getModelInfo({});
      expect(info.limits).toMatchObject({ maxBatchSize: 4, maxNewTokens: 64 });
      client.close();
      const metrics = await fetch(`http://127.0.0.1:${listening.metricsPort}/metrics`);
      expect(await metrics.text()).toContain("lightreasoner_inference_active_streams 0");
      running.child.kill("SIGTERM");
      expect(await running.exited).toBe(0);
      expect(running.lines.some((l) => l.msg === "inference server stopped")).toBe(true);
    } finally {
      running.child.kill("SIGKILL");
    }
  });

  it("--prepacked-cache: the first start writes both models' entries, the next one reads them", async () => {
    const cacheDir = mkdtempSync(join(tmpdir(), "lightreasoner-serve-prepacked-"));
    const flags = ["--expert", pair.expertDir, "--amateur", pair.amateurDir, "--port", "0", "--metrics-port", "0", "--execution-provider", "cpu", "--prepacked-cache", cacheDir];
    const cacheLines = (running: Running) => running.lines.map((l) => String(l.msg)).filter((m) => m.startsWith("onnxruntime: prepacked weights"));
    try {
      for (const verb of ["written to", "read from"]) {
        const running = serve(flags);
        try {
          await logLine(running, (l) => typeof l.msg === "string" && l.msg.startsWith("inference server listening"));
          expect(cacheLines(running)).toHaveLength(2);
          expect(cacheLines(running).every((m) => m.startsWith(`onnxruntime: prepacked weights ${verb} ${cacheDir}`))).toBe(true);
          running.child.kill("SIGTERM");
          expect(await running.exited).toBe(0);
        } finally {
          running.child.kill("SIGKILL");
        }
      }
      expect(readdirSync(cacheDir)).toHaveLength(2);
    } finally {
      rmSync(cacheDir, { recursive: true, force: true });
    }
  });

  it("a mismatched pair stops it at start-up, saying what differs", async () => {
    const mismatched = writeTinyPair({ amateur: { vocab_size: 320 } });
    try {
      const running = serve(["--expert", mismatched.expertDir, "--amateur", mismatched.amateurDir, "--port", "0", "--metrics-port", "0", "--execution-provider", "cpu"]);
      expect(await running.exited).not.toBe(0);
      expect(running.stderr.join("")).toContain("vocabulary size: 384 vs 320");
    } finally {
      mismatched.remove();
    }
  });

  it("refuses a bad flag before loading anything", async () => {
    const running = serve(["--expert", pair.expertDir, "--amateur", pair.amateurDir, "--execution-provider", "tpu"]);
    expect(await running.exited).not.toBe(0);
    expect(running.stderr.join("")).toContain("tpu");
  });
});
