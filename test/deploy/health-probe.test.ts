// deploy/docker/grpc-health-probe.mjs, the images' HEALTHCHECK, run as the container runs it
// (plain node, no tsx): SERVING is healthy (0), NOT_SERVING or an unknown service is not (1),
// no answer is another failure (2), bad flags are refused (3). Against the same health
// implementation the services use (in plain text and over mutual TLS), and against a real
// inference server.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { servedTinyPair } from "#test/inference/helpers.ts";
import { makeCa } from "#test/security/helpers.ts";
import { freePort, root } from "./processes.ts";

const PROBE = join(root, "deploy", "docker", "grpc-health-probe.mjs");

function probe(...args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [PROBE, ...args], { cwd: root });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    child.on("exit", (code) => resolve({ code, output }));
  });
}

describe("the gRPC health probe of the images", () => {
  let server: grpc.Server;
  let address: string;

  beforeAll(async () => {
    server = new grpc.Server();
    new HealthImplementation({ "": "SERVING", "lightreasoner.v1.InferenceService": "SERVING", "lightreasoner.v1.TrainerService": "NOT_SERVING" }).addToServer(server);
    const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    address = `127.0.0.1:${port}`;
  });
  afterAll(() => server?.forceShutdown());

  it("exits 0 on SERVING, for the whole server and for a service", async () => {
    expect(await probe("--addr", address)).toEqual({ code: 0, output: `grpc-health-probe: ${address} service "": SERVING\n` });
    expect((await probe("--addr", address, "--service", "lightreasoner.v1.InferenceService")).code).toBe(0);
  });

  it("exits 1 on NOT_SERVING (a draining server) and on a service the server does not know", async () => {
    const draining = await probe("--addr", address, "--service", "lightreasoner.v1.TrainerService");
    expect(draining.code).toBe(1);
    expect(draining.output).toContain("NOT_SERVING");
    const unknown = await probe("--addr", address, "--service", "no.such.Service");
    expect(unknown.code).toBe(1);
    expect(unknown.output).toContain("NOT_FOUND");
  });

  it("exits 2 when nothing answers, within its timeout", async () => {
    const started = Date.now();
    const r = await probe("--addr", `127.0.0.1:${await freePort()}`, "--timeout-ms", "1500");
    expect(r.code).toBe(2);
    expect(r.output).toContain("UNAVAILABLE");
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it("exits 3 on bad flags", async () => {
    expect((await probe("--adress", address)).code).toBe(3);
    expect((await probe("--timeout-ms", "soon")).code).toBe(3);
  });
});

describe("the probe over mutual TLS", () => {
  let dir: string;
  let server: grpc.Server;
  let address: string;
  let ca: ReturnType<typeof makeCa>;
  let client: ReturnType<ReturnType<typeof makeCa>["issue"]>;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "lr-probe-tls-"));
    ca = makeCa(dir, "probe-ca");
    const identity = ca.issue("server", "server");
    client = ca.issue("probe", "client");
    server = new grpc.Server();
    new HealthImplementation({ "": "SERVING" }).addToServer(server);
    const credentials = grpc.ServerCredentials.createSsl(ca.cert, [{ cert_chain: identity.cert, private_key: identity.key }], true);
    const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", credentials, (err, p) => (err ? reject(err) : resolve(p))));
    address = `127.0.0.1:${port}`;
  });
  afterAll(() => {
    server?.forceShutdown();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("exits 0 with the CA and a client certificate, 2 without the certificate, 3 on half a key pair", async () => {
    const ok = await probe("--addr", address, "--tls-ca", ca.certFile, "--tls-cert", client.certFile, "--tls-key", client.keyFile);
    expect(ok.code, ok.output).toBe(0);
    expect(ok.output).toContain(`grpc-health-probe: ${address} service "": SERVING\n`);
    expect((await probe("--addr", address, "--tls-ca", ca.certFile)).code).toBe(2);
    expect((await probe("--addr", address)).code).toBe(2);
    expect(await probe("--addr", address, "--tls-ca", ca.certFile, "--tls-cert", client.certFile)).toEqual({ code: 3, output: "grpc-health-probe: --tls-cert and --tls-key go together\n" });
  });
});

describe("the probe against the inference server", () => {
  const served = servedTinyPair(0);

  it("finds it SERVING under the service name the HEALTHCHECK and the readiness probe use", async () => {
    const inference = served.server;
    const r = await probe("--addr", inference.address, "--service", "lightreasoner.v1.InferenceService");
    expect(r).toEqual({ code: 0, output: `grpc-health-probe: ${inference.address} service "lightreasoner.v1.InferenceService": SERVING\n` });
  });
});
