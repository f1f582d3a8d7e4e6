// Inference scaled out, as deployed: two replica processes started with the arguments of the
// Kubernetes cpu overlay, and `lightreasoner sample` (the trainer's offline stage, a process
// of its own) spreading one run over both, which both replicas' metrics show. Then one
// replica is SIGKILLed mid-run: no goodbye, no NOT_SERVING, its TCP connections just die.
// The run still completes with exactly one record per problem and the same samples as the
// uninterrupted run. (test/trainer-sampling/endpoints.test.ts covers a replica that shuts
// down gracefully in-process, and kill.test.ts the sampler itself being killed; neither kills
// a replica process.) Last, the Kubernetes headless-service path: one DNS name with two A
// records (a private /etc/hosts in a mount namespace) and `--inference dns:///name:port`: the
// run completes on the replicas behind the name, each of them doing a real share (every
// resolved address gets a lane of its own: deploy/README.md, "How the trainer spreads work").
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readProblems } from "#core/tasks/problems.ts";
import type { TrajectoryRecord } from "#trainer/store/records.ts";
import { SampleStore } from "#trainer/store/sample-store.ts";
import { buildWorldData } from "#world/build-data.ts";
import { sampleSet } from "#test/trainer-sampling/helpers.ts";
import { flagValue } from "./deploy-files.ts";
import { renderKustomization } from "./kustomize.ts";
import { BIN, freePort, killAll, localArgs, root, scrapeValue, sleep, startProcess, startReplica } from "./processes.ts";
import type { Replica } from "./processes.ts";

const PROBLEMS = 160;
const SEED = "11";

/** The inference container's args in the rendered cpu overlay. */
function overlayInferenceArgs(): string[] {
  const objects = renderKustomization(join(root, "deploy", "k8s", "overlays", "cpu"));
  const deployment = objects.find((r) => r.object.kind === "Deployment" && r.object.metadata.name === "inference")!.object as any;
  return deployment.spec.template.spec.containers[0].args;
}

let dir: string;
let problemsFile: string;
let problemIds: string[];
let replicaArgs: string[];
/** The first, uninterrupted run's records: what every other run must reproduce. */
let reference: TrajectoryRecord[];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "lr-replicas-"));
  buildWorldData({ outDir: join(dir, "world"), trainCount: 1, testCount: PROBLEMS, seed: 5 });
  problemsFile = join(dir, "world", "test.jsonl");
  problemIds = readProblems(problemsFile).problems.map((p) => p.id).sort();
  const shipped = overlayInferenceArgs();
  expect(flagValue(shipped, "--execution-provider")).toBe("cpu");
  replicaArgs = localArgs(shipped, { "--host": "127.0.0.1", "--port": "0", "--metrics-port": "0", "--threads": "1" });
});
afterAll(() => {
  killAll();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** `lightreasoner sample` over `inference` into a store, as a process. */
function sample(inference: string, store: string, wrap: string[] = []) {
  const args = [BIN, "sample", "--inference", inference, "--expert", join(root, "models", "expert"), "--problems", problemsFile, "--store", store, "--seed", SEED, "--max-new-tokens", "48"];
  return wrap.length > 0 ? startProcess(wrap[0], [...wrap.slice(1), process.execPath, ...args]) : startProcess(process.execPath, args);
}

function storedLines(path: string): number {
  if (!existsSync(path)) return 0;
  return readFileSync(path, "utf8").split("\n").filter((l) => l.includes('"kind":"trajectory"')).length;
}

/**
 * The same sample set: every discrete part exactly equal (problems, steps, prefixes, plausible
 * ids), KL and soft-label weights equal up to float32 rounding. Rounding, not the sampling
 * tests' 1e-5: in a batch of another composition ONNX Runtime rounds the last bits of a row
 * differently, and float32 log-probabilities near -10 (the built-in amateur's) carry about 1e-5
 * of that, which the KL and the softmax over score differences pass on (seen here: 1.2e-5 on a
 * KL, 7e-6 on a weight).
 */
function expectSameSamples(actual: TrajectoryRecord[], expected: TrajectoryRecord[]): void {
  const a = sampleSet(actual);
  const b = sampleSet(expected);
  const discrete = (x: (typeof a)[number]) => ({ problemId: x.problemId, step: x.step, position: x.position, prefixTokenIds: x.prefixTokenIds, ids: x.ids, adapterVersion: x.adapterVersion });
  expect(a.map(discrete)).toEqual(b.map(discrete));
  const close = (x: number, y: number) => Math.abs(x - y) <= 1e-4 * Math.max(1, Math.abs(y));
  a.forEach((x, i) => {
    expect(close(x.kl, b[i].kl), `kl of ${x.problemId} step ${x.step}: ${x.kl} vs ${b[i].kl}`).toBe(true);
    x.weights.forEach((w, j) => expect(close(w, b[i].weights[j]), `weight ${j} of ${x.problemId} step ${x.step}: ${w} vs ${b[i].weights[j]}`).toBe(true));
  });
}

const trajectoryTokens = (r: Replica) => scrapeValue(r.host, r.metricsPort, "lightreasoner_inference_tokens_streamed_total", { mode: "trajectory" });

describe("a sampling run over two inference replicas", () => {
  let replicas: Replica[];

  beforeAll(async () => {
    replicas = await Promise.all([startReplica(replicaArgs), startReplica(replicaArgs)]);
  });

  it("spreads its work over both replicas, as their metrics show", async () => {
    const store = join(dir, "uninterrupted.jsonl");
    const run = sample(replicas.map((r) => r.address).join(","), store);
    const exit = await run.exited;
    expect(exit.code, run.stderr()).toBe(0);
    reference = SampleStore.read(store).records;
    expect(reference.map((r) => r.problemId).sort()).toEqual(problemIds);
    const tokens = await Promise.all(replicas.map(trajectoryTokens));
    // Both worked a fair share, and together they streamed exactly the steps stored: no step twice.
    for (const t of tokens) expect(t).toBeGreaterThan(0.25 * (tokens[0] + tokens[1]));
    expect(tokens[0] + tokens[1]).toBe(reference.reduce((n, r) => n + r.stepsSeen, 0));
    for (const r of replicas) {
      expect(await scrapeValue(r.host, r.metricsPort, "lightreasoner_inference_requests_total", { method: "InferenceService/StreamTrajectories", code: "OK" })).toBeGreaterThanOrEqual(1);
      expect(await scrapeValue(r.host, r.metricsPort, "lightreasoner_inference_batch_size_count", { model: "expert" })).toBeGreaterThan(0);
    }
  });

  it("completes when one replica is SIGKILLed mid-run, with every problem stored once and the same samples", async () => {
    expect(reference).toBeDefined();
    const [survivor, victim] = replicas;
    const survivorBefore = await trajectoryTokens(survivor);
    const store = join(dir, "killed.jsonl");
    const run = sample(replicas.map((r) => r.address).join(","), store);
    // Kill once the run is well under way, at a moment the victim holds sequences (running,
    // waiting or paused): their trajectories must be written again on the survivor.
    const inScheduler = () => scrapeValue(victim.host, victim.metricsPort, "lightreasoner_inference_sequences");
    const deadline = Date.now() + 30_000;
    while (storedLines(store) < PROBLEMS / 5 || (await inScheduler()) === 0) {
      if (Date.now() > deadline || run.child.exitCode !== null) throw new Error(`the run did not get under way: ${storedLines(store)} stored; ${run.stderr()}`);
      await sleep(5);
    }
    victim.child.kill("SIGKILL");
    const storedAtKill = storedLines(store);
    expect((await victim.exited).signal).toBe("SIGKILL");
    expect(storedAtKill).toBeLessThan(PROBLEMS);

    const exit = await run.exited;
    expect(exit.code, run.stderr()).toBe(0);
    // SampleStore.read refuses a problem stored twice and a torn line; all are there, once.
    const records = SampleStore.read(store).records;
    expect(records.map((r) => r.problemId).sort()).toEqual(reference.map((r) => r.problemId).sort());
    expectSameSamples(records, reference);
    // The survivor wrote the rest, including the trajectories the victim had in flight.
    expect(await trajectoryTokens(survivor)).toBeGreaterThan(survivorBefore);
  });
});

/** Whether this machine lets us give one process tree its own /etc/hosts (root, mount namespaces). */
const canUnshare = spawnSync("unshare", ["-m", "--propagation", "private", "true"], { stdio: "ignore" }).status === 0;

describe.skipIf(!canUnshare)("one DNS name for all replicas, as a headless Service gives (needs unshare -m: root)", () => {
  it("dns:///inference-headless:PORT completes a run on the replicas behind the name, every problem once", async () => {
    // Two replicas on one port of two loopback addresses: what two pods behind a headless Service look like.
    const port = await freePort("127.0.0.2");
    const replicas = await Promise.all(
      ["127.0.0.2", "127.0.0.3"].map((host) => startReplica(localArgs(replicaArgs, { "--host": host, "--port": String(port) }))),
    );
    const hosts = join(dir, "hosts");
    writeFileSync(hosts, "127.0.0.1 localhost\n::1 localhost\n127.0.0.2 inference-headless\n127.0.0.3 inference-headless\n");
    const store = join(dir, "dns.jsonl");
    const wrap = ["unshare", "-m", "--propagation", "private", "sh", "-c", `mount --bind "$0" /etc/hosts && exec "$@"`, hosts];
    const run = sample(`dns:///inference-headless:${port}`, store, wrap);
    const exit = await run.exited;
    expect(exit.code, run.stderr()).toBe(0);
    const records = SampleStore.read(store).records;
    expect(records.map((r) => r.problemId).sort()).toEqual(problemIds);
    expectSameSamples(records, reference);
    // Every step came from the replicas behind the name, none twice, and each address got a
    // lane of its own, so both did a real share.
    const tokens = await Promise.all(replicas.map(trajectoryTokens));
    expect(tokens[0] + tokens[1]).toBe(records.reduce((n, r) => n + r.stepsSeen, 0));
    for (const t of tokens) expect(t, `trajectory tokens per replica ${tokens.join(" / ")}`).toBeGreaterThan(0.25 * (tokens[0] + tokens[1]));
  });
});
