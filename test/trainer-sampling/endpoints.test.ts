// Several inference endpoints: the checks made before any work is sent (reachable, the
// trainer's expert, the same pair everywhere), dns:/// targets, work shared between two
// servers, and a server shut down in the middle of a run.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Status } from "#core/grpc/errors.ts";
import { modelFingerprint } from "#core/formats/model-dir.ts";
import type { InferenceServer } from "#inference/main.ts";
import { EndpointPool } from "#trainer/sampling/endpoint-pool.ts";
import { EndpointMismatchError, EndpointUnreachableError, FingerprintMismatchError } from "#trainer/sampling/errors.ts";
import type { TrajectoryRecord } from "#trainer/store/records.ts";
import { SampleStore } from "#trainer/store/sample-store.ts";
import { expectSameSamples, runSampling, startServer, writeProblems, writeTinyPair } from "./helpers.ts";
import type { TinyPair } from "./helpers.ts";

let pair: TinyPair;
let other: TinyPair;
let a: InferenceServer;
let b: InferenceServer;
let dir: string;

beforeAll(async () => {
  pair = writeTinyPair();
  // Same expert, another amateur (its seed differs): a different pair.
  other = writeTinyPair({ amateur: { initializer_range: 0.25 } });
  [a, b] = await Promise.all([startServer(pair), startServer(pair)]);
  dir = mkdtempSync(join(tmpdir(), "lr-endpoints-"));
});
afterAll(async () => {
  await Promise.all([a?.close(1000), b?.close(1000)]);
  pair?.remove();
  other?.remove();
  rmSync(dir, { recursive: true, force: true });
});

/** The error a promise rejects with (the test fails if it resolves). */
async function failure(work: Promise<unknown>): Promise<Error> {
  try {
    await work;
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a failure");
}

describe("checks before sampling", () => {
  it("names an unreachable endpoint and its address", async () => {
    const err = await failure(EndpointPool.connect({ targets: [a.address, "127.0.0.1:1"], connectTimeoutMs: 300 }));
    expect(err).toBeInstanceOf(EndpointUnreachableError);
    expect((err as EndpointUnreachableError).code).toBe(Status.UNAVAILABLE);
    expect(err.message).toMatch(/^inference endpoint 127\.0\.0\.1:1 is unreachable: no answer within 300 ms/);
  });

  it("names a name that does not resolve", async () => {
    const err = await failure(EndpointPool.connect({ targets: ["dns:///no-such-host.invalid:50051"], connectTimeoutMs: 300 }));
    expect(err.message).toMatch(/inference endpoint dns:\/\/\/no-such-host\.invalid:50051 is unreachable: the name no-such-host\.invalid does not resolve/);
  });

  it("refuses an endpoint whose expert is not the trainer's, naming both fingerprints", async () => {
    const err = await failure(EndpointPool.connect({ targets: [a.address], expertDir: other.amateurDir }));
    expect(err).toBeInstanceOf(FingerprintMismatchError);
    const e = err as FingerprintMismatchError;
    expect(e.code).toBe(Status.FAILED_PRECONDITION);
    expect(e.endpointFingerprint).toBe(modelFingerprint(pair.expertDir));
    expect(e.trainerFingerprint).toBe(modelFingerprint(other.amateurDir));
    expect(e.message).toContain(`inference endpoint ${a.address} serves an expert with fingerprint ${e.endpointFingerprint}`);
    expect(e.message).toContain(`the trainer's expert ${other.amateurDir} has fingerprint ${e.trainerFingerprint}`);
  });

  it("refuses endpoints that serve different pairs", async () => {
    const odd = await startServer(other);
    try {
      const err = await failure(EndpointPool.connect({ targets: [a.address, odd.address], expertDir: pair.expertDir }));
      expect(err).toBeInstanceOf(EndpointMismatchError);
      expect(err.message).toMatch(new RegExp(`^inference endpoint ${odd.address} does not serve what ${a.address} serves: amateur fingerprint [0-9a-f]{64} \\(vs [0-9a-f]{64}\\)$`));
    } finally {
      await odd.close(1000);
    }
  });

  it("accepts matching endpoints and reports what they serve", async () => {
    const pool = await EndpointPool.connect({ targets: [a.address, `dns:///localhost:${b.port}`], expertDir: pair.expertDir });
    try {
      expect(pool.served).toMatchObject({ expertFingerprint: modelFingerprint(pair.expertDir), amateurFingerprint: modelFingerprint(pair.amateurDir), vocabSize: 384 });
      expect(pool.lanes.map((l) => l.id)).toEqual([a.address, `dns:///localhost:${b.port}`]);
      expect(pool.endpoints[1].info.map((i) => i.address)).toEqual([`127.0.0.1:${b.port}`]);
    } finally {
      pool.close();
    }
  });
});

describe("sampling over two endpoints", () => {
  const { problems } = { problems: [] as ReturnType<typeof writeProblems>["problems"] };
  let reference: TrajectoryRecord[];

  beforeAll(async () => {
    problems.push(...writeProblems(dir, 24).problems);
    reference = (await runSampling({ targets: [a.address], storePath: join(dir, "one.jsonl"), problems, config: { maxNewTokens: 32 } })).records;
  });

  it("shares the work, dns:/// and host:port alike, and stores the same samples as one endpoint", async () => {
    const lanes = new Map<string, number>();
    const { records, summary } = await runSampling({
      targets: [a.address, `dns:///localhost:${b.port}`],
      storePath: join(dir, "two.jsonl"),
      problems,
      config: { maxNewTokens: 32, concurrency: 2 },
      onEvent: (e) => e.type === "problem" && lanes.set(e.lane, (lanes.get(e.lane) ?? 0) + 1),
    });
    expect(summary).toMatchObject({ sampled: 24, retries: 0, complete: true });
    expect([...lanes.keys()].sort()).toEqual([a.address, `dns:///localhost:${b.port}`].sort());
    for (const n of lanes.values()) expect(n).toBeGreaterThanOrEqual(6);
    expectSameSamples(records, reference);
  });

  it("finishes on the other endpoint when one shuts down mid-run, losing and duplicating nothing", async () => {
    const doomed = await startServer(pair);
    let stored = 0;
    let closing: Promise<void> | null = null;
    const events: string[] = [];
    const path = join(dir, "failover.jsonl");
    const { records, summary } = await runSampling({
      targets: [a.address, doomed.address],
      storePath: path,
      problems,
      config: { maxNewTokens: 32, concurrency: 2 },
      onEvent: (e) => {
        events.push(e.type);
        if (e.type === "problem" && ++stored === 4) closing = doomed.close(0);
      },
    });
    await closing;
    expect(summary.complete).toBe(true);
    expect(summary.retries).toBeGreaterThan(0);
    expect(events).toContain("lane-down");
    expect(events).toContain("retry");
    // One line per problem, no problem twice, the same samples as the single-endpoint run.
    const onDisk = SampleStore.read(path).records;
    expect(onDisk.map((r) => r.problemId).sort()).toEqual(problems.map((p) => p.id).sort());
    expect(summary.counts.problems).toBe(24);
    expect(summary.counts.stepsSeen).toBe(reference.reduce((n, r) => n + r.stepsSeen, 0));
    expectSameSamples(records, reference);
  });
});
