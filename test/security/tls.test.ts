// TLS end to end over loopback, with certificate authorities made here by the openssl CLI:
// a TLS inference server that also wants a token, an mTLS server where a verified client
// certificate is the credential (a client without one, or with one from another CA, is turned
// away at the handshake), and a TLS trainer that reaches the TLS inference server with its token
// for a whole run (sample, train, push).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "#core/grpc/adapter.ts";
import type { ClientSecurity } from "#core/grpc/adapter.ts";
import { AdapterService } from "#core/gen/lightreasoner/v1/adapter_pb.ts";
import { RunState, TrainerService } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import type { InferenceServer } from "#inference/main.ts";
import { startTrainerServer } from "#trainer/main.ts";
import type { TrainerServer } from "#trainer/main.ts";
import { startServer, writeTinyPair } from "#test/inference/helpers.ts";
import type { TinyPair } from "#test/inference/helpers.ts";
import { writeProblems } from "#test/trainer-sampling/helpers.ts";
import { smallRun, watchAll } from "#test/trainer/helpers.ts";
import { capturingLogger, healthCheck, makeCa, statusOf } from "./helpers.ts";
import type { Pem, TestCa } from "./helpers.ts";

const TOKEN = "tls-test-token-5b1e07c2d9";

describe("TLS and mutual TLS over loopback", () => {
  const logs: string[] = [];
  let dir: string;
  let pair: TinyPair;
  let ca: TestCa;
  let rogue: TestCa;
  let server: Pem;
  let client: Pem;
  let rogueClient: Pem;
  let tlsInference: InferenceServer;
  let mtlsInference: InferenceServer;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "lr-tls-"));
    ca = makeCa(dir, "test-ca");
    rogue = makeCa(dir, "rogue-ca");
    server = ca.issue("server", "server");
    client = ca.issue("client", "client");
    rogueClient = rogue.issue("client", "client");
    pair = writeTinyPair();
    tlsInference = await startServer(pair, { tls: { cert: server.cert, key: server.key }, access: { token: TOKEN }, logger: capturingLogger(logs) });
    mtlsInference = await startServer(pair, { tls: { cert: server.cert, key: server.key, clientCa: ca.cert }, access: {}, logger: capturingLogger(logs) });
  });
  afterAll(async () => {
    await Promise.all([tlsInference?.close(1000), mtlsInference?.close(1000)]);
    pair?.remove();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function rollback(address: string, security: ClientSecurity): Promise<string> {
    const adapters = createClient(AdapterService, address, { security });
    try {
      return await statusOf(adapters.rollbackToBase({}, { timeoutMs: 5000 }));
    } finally {
      adapters.close();
    }
  }

  it("TLS server with a token: the right client gets through; plain text and a stranger's CA do not", async () => {
    expect(await rollback(tlsInference.address, { token: TOKEN, tls: { ca: ca.cert } })).toBe("OK");
    expect(await rollback(tlsInference.address, { tls: { ca: ca.cert } })).toBe("UNAUTHENTICATED");
    expect(await rollback(tlsInference.address, { token: "not-the-token-at-all", tls: { ca: ca.cert } })).toBe("PERMISSION_DENIED");
    // A plain-text client cannot speak to a TLS port, and a client that trusts another CA refuses the server.
    expect(await rollback(tlsInference.address, { token: TOKEN })).toBe("UNAVAILABLE");
    expect(await rollback(tlsInference.address, { token: TOKEN, tls: { ca: rogue.cert } })).toBe("UNAVAILABLE");
    expect(await healthCheck(tlsInference.address, grpc.credentials.createSsl(ca.cert))).toBe("SERVING");
  });

  it("mTLS: a verified client certificate is the credential; no certificate or a stranger's is refused", async () => {
    expect(await rollback(mtlsInference.address, { tls: { ca: ca.cert, cert: client.cert, key: client.key } })).toBe("OK");
    expect(await rollback(mtlsInference.address, { tls: { ca: ca.cert } })).toBe("UNAVAILABLE");
    expect(await rollback(mtlsInference.address, { tls: { ca: ca.cert, cert: rogueClient.cert, key: rogueClient.key } })).toBe("UNAVAILABLE");
    expect(logs.some((l) => l.includes('"tls":"mutual TLS"'))).toBe(true);
    expect(logs.some((l) => l.includes("access: mutating calls need a verified client certificate"))).toBe(true);
  });

  describe("a TLS trainer reaching the TLS inference server with its token", () => {
    let trainer: TrainerServer;
    beforeAll(async () => {
      trainer = await startTrainerServer({
        expertDir: pair.expertDir,
        inferenceTargets: [tlsInference.address],
        runsDir: join(pair.root, "runs"),
        port: 0,
        metricsPort: 0,
        connectTimeoutMs: 3000,
        logger: capturingLogger(logs),
        tls: { cert: server.cert, key: server.key },
        access: { token: TOKEN },
        inferenceSecurity: { token: TOKEN, tls: { ca: ca.cert } },
      });
    });
    afterAll(async () => {
      await trainer?.close();
    });

    it("runs end to end: StartRun over TLS, then sampling, training and the push over TLS", async () => {
      const runs = createClient(TrainerService, trainer.address, { security: { token: TOKEN, tls: { ca: ca.cert } } });
      try {
        await runs.startRun({ runId: "over-tls", config: smallRun(writeProblems(pair.root, 8).file, { optimization: { batchSize: 4, gradientAccumulation: 1, maxSteps: 2 } }) });
        const last = (await watchAll(runs, "over-tls")).at(-1)!.event;
        expect(last.case === "finished" && last.value.error).toBe("");
        expect(last.case === "finished" && last.value.state).toBe(RunState.SUCCEEDED);
        const version = last.case === "finished" ? last.value.liveAdapterVersion : "";
        const adapters = createClient(AdapterService, tlsInference.address, { security: { tls: { ca: ca.cert } } });
        const listed = await adapters.listAdapters({});
        adapters.close();
        expect(version).toMatch(/\S/);
        expect(listed.adapters.map((a) => a.version)).toContain(version);
      } finally {
        runs.close();
      }
      for (const line of logs) expect(line).not.toContain(TOKEN);
    });
  });
});
