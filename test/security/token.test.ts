// Bearer tokens on real servers over loopback: for a mutating RPC of each service, no
// credential gets UNAUTHENTICATED, a wrong token PERMISSION_DENIED, the right one goes through;
// reads are open by default and closed with protectReads; Health stays open; a server with no
// credential refuses mutations unless opened explicitly; the trainer presents its token to the
// inference service (a run that pushes adapters), and without it the run fails, saying why.
// Every log line of every server is kept and searched for the token.
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "#core/grpc/adapter.ts";
import { AdapterService } from "#core/gen/lightreasoner/v1/adapter_pb.ts";
import { GenerationMode, InferenceService } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { RunState, TrainerService } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import type { InferenceServer } from "#inference/main.ts";
import { startTrainerServer } from "#trainer/main.ts";
import type { TrainerServer } from "#trainer/main.ts";
import { startServer, writeTinyPair } from "#test/inference/helpers.ts";
import type { TinyPair } from "#test/inference/helpers.ts";
import { writeProblems } from "#test/trainer-sampling/helpers.ts";
import { smallRun, watchAll } from "#test/trainer/helpers.ts";
import { capturingLogger, healthCheck, statusOf } from "./helpers.ts";

const TOKEN = "tok_3f9a2c71e8b54d06a1c9";
const WRONG = "tok_0000000000000000000";

describe("bearer tokens on real servers", () => {
  const logs: string[] = [];
  const messages: string[] = [];
  let pair: TinyPair;
  let inference: InferenceServer;
  let trainer: TrainerServer;
  let problemsFile: string;

  beforeAll(async () => {
    pair = writeTinyPair();
    problemsFile = writeProblems(pair.root, 8).file;
    inference = await startServer(pair, { access: { token: TOKEN }, logger: capturingLogger(logs) });
    trainer = await startTrainerServer({
      expertDir: pair.expertDir,
      inferenceTargets: [inference.address],
      runsDir: join(pair.root, "runs"),
      port: 0,
      metricsPort: 0,
      connectTimeoutMs: 2000,
      logger: capturingLogger(logs),
      access: { token: TOKEN },
      inferenceSecurity: { token: TOKEN },
    });
  });
  afterAll(async () => {
    await trainer?.close();
    await inference?.close(1000);
    pair?.remove();
  });

  const adapters = (token?: string) => createClient(AdapterService, inference.address, { security: { token } });
  const runs = (token?: string) => createClient(TrainerService, trainer.address, { security: { token } });

  it("listens on loopback when no host is given", () => {
    expect(trainer.address).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(logs.some((l) => l.includes('"host":"127.0.0.1"') && l.includes("trainer listening"))).toBe(true);
  });

  it("AdapterService.RollbackToBase: none UNAUTHENTICATED, wrong PERMISSION_DENIED, right OK", async () => {
    const statuses = [];
    for (const token of [undefined, WRONG, TOKEN]) {
      const client = adapters(token);
      statuses.push(await statusOf(client.rollbackToBase({}), messages));
      client.close();
    }
    expect(statuses).toEqual(["UNAUTHENTICATED", "PERMISSION_DENIED", "OK"]);
    expect(messages.slice(-2)).toEqual(["RollbackToBase needs a credential: send `authorization: Bearer <token>` metadata", "RollbackToBase: the bearer token is not the one this server accepts"]);
  });

  it("UploadAdapter (client-streaming) is refused before the server reads the upload", async () => {
    const client = adapters(WRONG);
    const upload = client.uploadAdapter({ timeoutMs: 5000 });
    await upload.write({ part: { case: "header", value: { adapterConfigJson: "{}", safetensorsSize: 4 } } }).catch(() => undefined);
    expect(await statusOf(upload.end(), messages)).toBe("PERMISSION_DENIED");
    client.close();
  });

  it("TrainerService.CancelRun: none UNAUTHENTICATED, wrong PERMISSION_DENIED, right reaches the handler", async () => {
    const statuses = [];
    for (const token of [undefined, WRONG, TOKEN]) {
      const client = runs(token);
      statuses.push(await statusOf(client.cancelRun({ runId: "no-such-run" }), messages));
      client.close();
    }
    // NOT_FOUND comes from the handler: the credential was accepted.
    expect(statuses).toEqual(["UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND"]);
  });

  it("leaves reads and Health open", async () => {
    const inferenceClient = createClient(InferenceService, inference.address);
    const adapterClient = adapters();
    const trainerClient = runs();
    try {
      expect(await statusOf(inferenceClient.getModelInfo({}))).toBe("OK");
      expect(await statusOf(adapterClient.listAdapters({}))).toBe("OK");
      expect(await statusOf(trainerClient.listRuns({}))).toBe("OK");
      const chunks = [];
      for await (const chunk of inferenceClient.generate({ prompt: { source: { case: "text", value: "2 + 2 =" } }, sampling: { maxNewTokens: 2 }, mode: GenerationMode.EXPERT })) chunks.push(chunk);
      expect(chunks.length).toBeGreaterThan(0);
      expect(await healthCheck(inference.address)).toBe("SERVING");
      expect(await healthCheck(trainer.address)).toBe("SERVING");
    } finally {
      inferenceClient.close();
      adapterClient.close();
      trainerClient.close();
    }
  });

  it("the trainer presents its token to the inference service: a run samples, trains and pushes", async () => {
    const client = runs(TOKEN);
    try {
      await client.startRun({ runId: "with-token", config: smallRun(problemsFile, { optimization: { batchSize: 4, gradientAccumulation: 1, maxSteps: 2 } }) });
      const events = await watchAll(client, "with-token");
      const last = events.at(-1)!.event;
      expect(last.case === "finished" && last.value.error, "no error").toBe("");
      expect(last.case === "finished" && last.value.state).toBe(RunState.SUCCEEDED);
      expect(last.case === "finished" && last.value.liveAdapterVersion).toMatch(/\S/);
    } finally {
      client.close();
    }
    const listed = adapters();
    expect((await listed.listAdapters({})).adapters.length).toBe(1);
    listed.close();
  });

  it("a trainer without the token fails its run, naming the refusal", async () => {
    const tokenless = await startTrainerServer({
      expertDir: pair.expertDir,
      inferenceTargets: [inference.address],
      runsDir: join(pair.root, "runs-tokenless"),
      port: 0,
      metricsPort: 0,
      connectTimeoutMs: 2000,
      logger: capturingLogger(logs),
      access: { token: TOKEN },
    });
    const client = createClient(TrainerService, tokenless.address, { security: { token: TOKEN } });
    try {
      await client.startRun({ runId: "no-token", config: smallRun(problemsFile, { optimization: { batchSize: 4, gradientAccumulation: 1, maxSteps: 2 } }) });
      const last = (await watchAll(client, "no-token")).at(-1)!.event;
      expect(last.case === "finished" && last.value.state).toBe(RunState.FAILED);
      expect(last.case === "finished" && last.value.error).toMatch(/could not push the adapter .*UNAUTHENTICATED: UploadAdapter needs a credential/);
    } finally {
      client.close();
      await tokenless.close();
    }
  });

  it("never writes the token to a log line or an error message", () => {
    // The refusals above were logged (as warnings), so the search covers them.
    expect(logs.filter((l) => l.includes("PERMISSION_DENIED")).length).toBeGreaterThan(0);
    expect(logs.some((l) => l.includes("access: mutating calls need a bearer token"))).toBe(true);
    for (const line of [...logs, ...messages]) {
      expect(line).not.toContain(TOKEN);
      expect(line).not.toContain(WRONG);
    }
  });
});

describe("reads closed, and a server with no credential", () => {
  let pair: TinyPair;
  const servers: InferenceServer[] = [];
  beforeAll(() => {
    pair = writeTinyPair();
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close(1000)));
    pair?.remove();
  });

  it("protectReads: GetModelInfo and Generate need the token; Health does not", async () => {
    const server = await startServer(pair, { access: { token: TOKEN, protectReads: true } });
    servers.push(server);
    const statuses = [];
    for (const token of [undefined, WRONG, TOKEN]) {
      const client = createClient(InferenceService, server.address, { security: { token } });
      statuses.push(await statusOf(client.getModelInfo({})));
      statuses.push(await statusOf(async () => {
        for await (const _ of client.generate({ prompt: { source: { case: "text", value: "1 + 1 =" } }, sampling: { maxNewTokens: 1 }, mode: GenerationMode.EXPERT }));
      }));
      client.close();
    }
    expect(statuses).toEqual(["UNAUTHENTICATED", "UNAUTHENTICATED", "PERMISSION_DENIED", "PERMISSION_DENIED", "OK", "OK"]);
    expect(await healthCheck(server.address)).toBe("SERVING");
  });

  it("protectReads closes /metrics too: a scrape needs the bearer token (401 without, 403 wrong)", async () => {
    const closed = await startServer(pair, { access: { token: TOKEN, protectReads: true } });
    const open = await startServer(pair, { access: { token: TOKEN } });
    servers.push(closed, open);
    const scrape = async (port: number, authorization?: string) => {
      const response = await fetch(`http://127.0.0.1:${port}/metrics`, { headers: authorization ? { authorization } : {} });
      return [response.status, response.headers.get("www-authenticate"), (await response.text()).split("\n")[0]];
    };
    expect(await scrape(closed.metricsPort)).toEqual([401, 'Bearer realm="metrics"', "GET /metrics needs a credential: send an `Authorization: Bearer <token>` header"]);
    expect(await scrape(closed.metricsPort, `Bearer ${WRONG}`)).toEqual([403, null, "GET /metrics: the bearer token is not the one this server accepts"]);
    expect(await scrape(closed.metricsPort, `Basic ${TOKEN}`)).toEqual([401, 'Bearer realm="metrics"', 'GET /metrics: the authorization must read "Bearer <token>"']);
    const served = await scrape(closed.metricsPort, `Bearer ${TOKEN}`);
    expect(served[0]).toBe(200);
    expect(served[2]).toMatch(/^# HELP /);
    // Reads open (the default): scrapes need nothing, as Prometheus' plain config expects.
    expect((await scrape(open.metricsPort))[0]).toBe(200);
  });

  it("no credential: mutating calls refused with the way out named, unless allowUnauthenticated", async () => {
    const closed = await startServer(pair, { access: {} });
    const open = await startServer(pair, { access: { allowUnauthenticated: true } });
    servers.push(closed, open);
    const messages: string[] = [];
    const refusedClient = createClient(AdapterService, closed.address, { security: { token: TOKEN } });
    const openClient = createClient(AdapterService, open.address);
    expect(await statusOf(refusedClient.rollbackToBase({}), messages)).toBe("UNAUTHENTICATED");
    expect(messages[0]).toMatch(/started without one: give it --auth-token-file, LIGHTREASONER_AUTH_TOKEN or --tls-client-ca/);
    expect(await statusOf(refusedClient.listAdapters({}))).toBe("OK");
    expect(await statusOf(openClient.rollbackToBase({}))).toBe("OK");
    refusedClient.close();
    openClient.close();
  });
});
