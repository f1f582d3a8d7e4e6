// A replica that no longer holds the adapter a run's requests pin (evicted for other clients'
// adapters, or restarted at the same address): sampling and
// evaluation upload it again and carry on, every trajectory and answer from that adapter;
// without a way to upload it they fail naming the missing version, as before.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadModelDir } from "#core/formats/model-dir.ts";
import { Status } from "#core/grpc/adapter.ts";
import { DEFAULT_LORA, randomLoraAdapter } from "#core/model/lora.ts";
import type { LoraAdapter } from "#core/model/lora.ts";
import type { InferenceServer } from "#inference/main.ts";
import { pushAdapter } from "#trainer/adapter-push.ts";
import { activateOnReplicas } from "#trainer/runs/endpoint-adapters.ts";
import { evaluate } from "#trainer/eval/evaluate.ts";
import { resolveSamplerConfig } from "#trainer/sampling/config.ts";
import { EndpointPool } from "#trainer/sampling/endpoint-pool.ts";
import { RequestRefusedError } from "#trainer/sampling/errors.ts";
import { restoreOncePerReplica } from "#trainer/sampling/pinned-adapter.ts";
import { sampleProblems } from "#trainer/sampling/sampler.ts";
import { SampleStore } from "#trainer/store/sample-store.ts";
import { clients } from "#test/inference/helpers.ts";
import { BASE_CONFIG, startServer, writeProblems, writeTinyPair } from "./helpers.ts";
import type { TinyPair } from "./helpers.ts";

let pair: TinyPair;
let server: InferenceServer;
let pool: EndpointPool;
let dir: string;
let adapter: LoraAdapter;

beforeAll(async () => {
  pair = writeTinyPair();
  server = await startServer(pair);
  pool = await EndpointPool.connect({ targets: [server.address], expertDir: pair.expertDir });
  dir = mkdtempSync(join(tmpdir(), "lr-lost-adapter-"));
  adapter = randomLoraAdapter(loadModelDir(pair.expertDir).config, 11, DEFAULT_LORA, 0.05);
});
afterAll(async () => {
  pool?.close();
  await server?.close(1000);
  pair?.remove();
  rmSync(dir, { recursive: true, force: true });
});

/** Uploads the adapter, then unloads it the way an eviction or a restart loses it; returns its version. */
async function uploadThenLose(): Promise<string> {
  const version = await pushAdapter(server.address, adapter, { activate: false });
  const c = clients(server);
  try {
    await c.adapters.unloadAdapter({ version });
    expect((await c.adapters.listAdapters({})).adapters.map((a) => a.version)).not.toContain(version);
  } finally {
    c.close();
  }
  return version;
}

/** A restore that uploads the adapter again to the replica named and counts the uploads. */
function countingRestore(expected: string) {
  const uploads: string[] = [];
  const restore = restoreOncePerReplica(async (version, address) => {
    expect(address).toBe(server.address);
    uploads.push(version);
    const pushed = await pushAdapter(address, adapter, { activate: false });
    if (pushed !== expected) throw new Error(`pushed as ${pushed}`);
  });
  return { uploads, restore };
}

describe("a pinned adapter the replica lost", () => {
  it("sampling uploads it again once for the trajectories that found it gone, and every stored trajectory comes from it", async () => {
    const version = await uploadThenLose();
    const { uploads, restore } = countingRestore(version);
    const storePath = join(dir, "samples.jsonl");
    const store = SampleStore.open(storePath);
    const retries: string[] = [];
    try {
      // As many problems as trajectories in flight (BASE_CONFIG.concurrency): all are refused before the upload starts.
      const { problems } = writeProblems(dir, BASE_CONFIG.concurrency);
      const summary = await sampleProblems({
        pool,
        store,
        problems,
        config: resolveSamplerConfig({ ...BASE_CONFIG, maxNewTokens: 6 }, pool.served),
        pinAdapter: () => version,
        restoreAdapter: restore,
        onEvent: (e) => {
          if (e.type === "retry") retries.push(e.reason);
        },
      });
      expect(summary.complete).toBe(true);
      expect(summary.sampled).toBe(BASE_CONFIG.concurrency);
      // One upload served every trajectory that found the adapter gone.
      expect(uploads).toEqual([version]);
      expect(retries.length).toBeGreaterThan(0);
      for (const reason of retries) expect(reason).toMatch(new RegExp(`NOT_FOUND: adapter.version: adapter "${version}" is not loaded.*\\(uploaded it again\\)`));
    } finally {
      store.close();
    }
    expect(SampleStore.read(storePath).records.map((r) => r.adapterVersion)).toEqual(Array(BASE_CONFIG.concurrency).fill(version));
  });

  it("evaluation uploads it again and every answer comes from it", async () => {
    const version = await uploadThenLose();
    const { uploads, restore } = countingRestore(version);
    const { problems } = writeProblems(dir, 4, 100);
    const result = await evaluate({ pool, problems, adapter: version, restoreAdapter: restore, maxNewTokens: 4, concurrency: 4 });
    expect(result.problems).toBe(4);
    expect(result.adapterVersions).toEqual([version]);
    expect(uploads).toEqual([version]);
  });

  it("activating it (activate_final_adapter) uploads it again first, and it ends active", async () => {
    const version = await uploadThenLose();
    const { uploads, restore } = countingRestore(version);
    await activateOnReplicas(pool, version, undefined, restore);
    expect(uploads).toEqual([version]);
    const c = clients(server);
    try {
      expect((await c.adapters.listAdapters({})).adapters.find((a) => a.version === version)?.active).toBe(true);
      await c.adapters.rollbackToBase({});
    } finally {
      c.close();
    }
  });

  it("without a way to upload it, sampling fails with NOT_FOUND naming the version; a failed upload fails it as UNAVAILABLE saying why", async () => {
    const version = await uploadThenLose();
    const { problems } = writeProblems(dir, 2, 200);
    const sample = (restoreAdapter?: (v: string, address: string) => Promise<void>) => {
      const store = SampleStore.open(join(dir, `refused-${restoreAdapter ? "upload" : "none"}.jsonl`));
      return sampleProblems({ pool, store, problems, config: resolveSamplerConfig({ ...BASE_CONFIG, maxNewTokens: 4 }, pool.served), pinAdapter: () => version, restoreAdapter }).finally(() => store.close());
    };
    const refused = await sample().then(
      () => null,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(RequestRefusedError);
    expect((refused as RequestRefusedError).code).toBe(Status.NOT_FOUND);
    expect((refused as RequestRefusedError).message).toContain(version);

    const failedUpload = await sample(() => Promise.reject(new Error("the replica refused the upload"))).then(
      () => null,
      (err: unknown) => err as Error & { code: Status },
    );
    expect(failedUpload?.code).toBe(Status.UNAVAILABLE);
    expect(failedUpload?.message).toMatch(new RegExp(`no longer holds adapter ${version} .*uploading it again failed: the replica refused the upload`));
  });
});
