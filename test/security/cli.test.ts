// The credential and TLS flags as an operator uses them, on real processes: `serve trainer`
// over mutual TLS with a token file, reached by `lightreasoner runs` with a client certificate,
// with the token from --auth-token-file or $LIGHTREASONER_AUTH_TOKEN, or with neither; and a
// start-up refusal (flags.test.ts covers the rest of the flag checks in-process).
import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeTinyPair } from "#test/inference/helpers.ts";
import type { TinyPair } from "#test/inference/helpers.ts";
import { makeCa } from "./helpers.ts";
import type { Pem, TestCa } from "./helpers.ts";

const TOKEN = "cli-token-9c7e5a3b1d2f4e6a";
const execute = promisify(execFile);

async function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const environment = { ...process.env, ...env };
  if (!("LIGHTREASONER_AUTH_TOKEN" in env)) delete environment.LIGHTREASONER_AUTH_TOKEN;
  try {
    const { stdout, stderr } = await execute(process.execPath, ["bin/lightreasoner.mjs", ...args], { timeout: 60_000, env: environment });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** `lightreasoner serve trainer <args>`; resolves with its listening log line once it listens. */
async function serveTrainer(args: string[], lines: string[], env: Record<string, string> = {}): Promise<{ child: ChildProcess; listening: Record<string, unknown> }> {
  const environment = { ...process.env, ...env };
  if (!("LIGHTREASONER_AUTH_TOKEN" in env)) delete environment.LIGHTREASONER_AUTH_TOKEN;
  const child = spawn(process.execPath, ["bin/lightreasoner.mjs", "serve", "trainer", "--inference", "127.0.0.1:1", "--port", "0", "--metrics-port", "0", ...args], { stdio: ["ignore", "pipe", "pipe"], env: environment });
  child.stderr!.on("data", (chunk: Buffer) => lines.push(chunk.toString()));
  const listening = await new Promise<Record<string, unknown>>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      lines.push(line);
      const entry = JSON.parse(line) as Record<string, unknown>;
      if (typeof entry.port === "number" && typeof entry.msg === "string" && entry.msg.startsWith("trainer listening")) resolve(entry);
    });
    child.once("exit", (code) => reject(new Error(`the trainer exited with ${code}: ${lines.join("\n")}`)));
  });
  return { child, listening };
}

describe("the security flags of serve trainer and runs", () => {
  let dir: string;
  let pair: TinyPair;
  let ca: TestCa;
  let server: Pem;
  let client: Pem;
  let tokenFile: string;
  let mtlsTrainer: ChildProcess;
  let plainTrainer: ChildProcess;
  const lines: string[] = [];
  let address: string;
  let plainAddress: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "lr-security-cli-"));
    pair = writeTinyPair();
    ca = makeCa(dir, "ops-ca");
    server = ca.issue("trainer", "server");
    client = ca.issue("operator", "client");
    tokenFile = join(dir, "token");
    writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    const [mtls, plain] = await Promise.all([
      serveTrainer(["--expert", pair.expertDir, "--runs-dir", join(dir, "runs"), "--auth-token-file", tokenFile, "--tls-cert", server.certFile, "--tls-key", server.keyFile, "--tls-client-ca", ca.certFile], lines),
      // The token from the environment, as `lightreasoner run` hands it to its services.
      serveTrainer(["--expert", pair.expertDir, "--runs-dir", join(dir, "runs-plain")], lines, { LIGHTREASONER_AUTH_TOKEN: TOKEN }),
    ]);
    mtlsTrainer = mtls.child;
    plainTrainer = plain.child;
    expect(mtls.listening.host).toBe("127.0.0.1");
    expect(mtls.listening.tls).toBe("mutual TLS");
    expect(plain.listening.tls).toBe("off");
    address = `127.0.0.1:${mtls.listening.port as number}`;
    plainAddress = `127.0.0.1:${plain.listening.port as number}`;
  });
  afterAll(() => {
    mtlsTrainer?.kill("SIGKILL");
    plainTrainer?.kill("SIGKILL");
    pair?.remove();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const tlsFlags = () => ["--trainer", address, "--tls-ca", ca.certFile];
  const withCertificate = () => [...tlsFlags(), "--tls-cert", client.certFile, "--tls-key", client.keyFile];

  it("a client certificate is the credential", async () => {
    const cancel = await cli(["runs", "cancel", "no-such-run", ...withCertificate()]);
    // NOT_FOUND is the handler's answer: the certificate was accepted.
    expect(cancel.stderr).toMatch(/^lightreasoner: NOT_FOUND: /m);
  });

  it("without a client certificate the handshake fails, whatever the token", async () => {
    const refused = await cli(["runs", "cancel", "no-such-run", ...tlsFlags(), "--auth-token-file", tokenFile]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^lightreasoner: UNAVAILABLE: /m);
    expect(refused.stderr).not.toContain(TOKEN);
  });

  it("a token from --auth-token-file or $LIGHTREASONER_AUTH_TOKEN: none UNAUTHENTICATED, the file's goes through, a wrong one PERMISSION_DENIED", async () => {
    const cancel = (args: string[], env: Record<string, string> = {}) => cli(["runs", "cancel", "no-such-run", "--trainer", plainAddress, ...args], env);
    const [none, fromFile, fromEnv] = await Promise.all([cancel([]), cancel(["--auth-token-file", tokenFile]), cancel([], { LIGHTREASONER_AUTH_TOKEN: `${TOKEN}x` })]);
    expect(none.stderr).toBe("lightreasoner: UNAUTHENTICATED: CancelRun needs a credential: send `authorization: Bearer <token>` metadata\n");
    expect(fromFile.stderr).toMatch(/^lightreasoner: NOT_FOUND: /m);
    expect(fromEnv.stderr).toBe("lightreasoner: PERMISSION_DENIED: CancelRun: the bearer token is not the one this server accepts\n");
  });

  it("refuses a key that is not the certificate's at start-up, in one line naming both flags", async () => {
    const other = ca.issue("other", "server");
    const mismatched = await cli(["serve", "trainer", "--inference", "127.0.0.1:1", "--expert", pair.expertDir, "--tls-cert", server.certFile, "--tls-key", other.keyFile]);
    expect(mismatched.code).toBe(1);
    expect(mismatched.stderr).toBe(`lightreasoner: --tls-key ${other.keyFile} is not the private key of --tls-cert ${server.certFile}\n`);
  });

  it("never logs the token", () => {
    expect(lines.join("\n")).toContain("access: mutating calls need a bearer token or a verified client certificate");
    expect(lines.join("\n")).not.toContain(TOKEN);
  });
});
