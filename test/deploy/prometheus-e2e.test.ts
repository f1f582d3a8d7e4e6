// A real Prometheus (the Debian binary) scrapes two real inference replicas and a real trainer,
// all started with the commands deploy/compose.yaml ships (paths and ports made local),
// through the shipped prometheus.yml: its jobs and alert rules, with static local targets
// instead of Docker's DNS and a 1 s interval. During a small training run (the trainer
// sampling over both replicas, training a few LoRA steps) its HTTP API must show every target
// up and the key series from each; every Grafana panel's query must have data (but the error
// ratio, with no errors); the rules must load and evaluate cleanly with nothing firing; and a
// replica killed must become up == 0 and a pending InferenceReplicaDown alert.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { createClient } from "#core/grpc/adapter.ts";
import { RunMode, RunState, TrainerService } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import { buildWorldData } from "#world/build-data.ts";
import { finished } from "#test/trainer/helpers.ts";
import { composeInferenceArgs, dashboardQueries, readYaml } from "./deploy-files.ts";
import { eventually, killAll, LOCAL_TOKEN, localArgs, root, runs, startPrometheus, startReplica, startService } from "./processes.ts";
import type { PrometheusServer, Replica, Service } from "./processes.ts";

const hasPrometheus = runs("prometheus", ["--version"]);
const INFERENCE_JOB = "lightreasoner-inference";
const TRAINER_JOB = "lightreasoner-trainer";
const OPTIMIZER_STEPS = 4;

describe.skipIf(!hasPrometheus)("Prometheus scraping two inference replicas and the trainer (Debian prometheus)", () => {
  let dir: string;
  let replicas: Replica[];
  let trainer: Service;
  let prometheus: PrometheusServer;
  const instance = (s: Service) => `127.0.0.1:${s.metricsPort}`;
  const byInstance = async (expr: string) => new Map((await prometheus.query(expr)).map((s) => [s.metric.instance, Number(s.value[1])]));

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "lr-prometheus-"));
    const local = { "--host": "127.0.0.1", "--port": "0", "--metrics-port": "0" };
    replicas = await Promise.all([startReplica(localArgs(composeInferenceArgs(), local)), startReplica(localArgs(composeInferenceArgs(), local))]);
    const trainerArgs = localArgs(readYaml("compose.yaml").services.trainer.command, {
      ...local,
      "--inference": replicas.map((r) => r.address).join(","),
      "--runs-dir": join(dir, "runs"),
    });
    trainer = await startService(trainerArgs, "trainer listening");

    // The shipped configuration with each job's targets made local.
    const shipped = parse(readFileSync(join(root, "deploy", "prometheus", "prometheus.yml"), "utf8"));
    const targets: Record<string, string[]> = { [INFERENCE_JOB]: replicas.map(instance), [TRAINER_JOB]: [instance(trainer)] };
    const config = {
      ...shipped,
      global: { ...shipped.global, scrape_interval: "1s", evaluation_interval: "1s" },
      rule_files: shipped.rule_files.map((f: string) => join(root, "deploy", "prometheus", f)),
      scrape_configs: shipped.scrape_configs
        .filter((job: any) => job.job_name in targets)
        .map((job: any) => ({ job_name: job.job_name, static_configs: [{ targets: targets[job.job_name] }] })),
    };
    expect(config.scrape_configs.map((j: any) => j.job_name)).toEqual([INFERENCE_JOB, TRAINER_JOB]);
    prometheus = await startPrometheus(config, join(dir, "prometheus"));

    // A small LightReasoner run on the trainer's default endpoints: both replicas.
    buildWorldData({ outDir: join(dir, "world"), trainCount: 1, testCount: 24, seed: 3 });
    const client = createClient(TrainerService, trainer.address, { security: { token: LOCAL_TOKEN } });
    try {
      await client.startRun({
        runId: "prometheus-e2e",
        config: {
          mode: RunMode.OFFLINE,
          problems: { path: join(dir, "world", "test.jsonl") },
          sampling: { params: { temperature: 1, maxNewTokens: 32 }, concurrency: 4 },
          optimization: { batchSize: 4, gradientAccumulation: 1, maxSteps: OPTIMIZER_STEPS },
          seed: 3,
        },
      });
      expect(await finished(client, "prometheus-e2e")).toBe(RunState.SUCCEEDED);
    } finally {
      client.close();
    }
  });

  afterAll(() => {
    killAll();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("shows every target up, and each replica's tokens, batches, calls and adapter version", async () => {
    const instances = replicas.map(instance).sort();
    await eventually("every target scraped, with each replica's work", async () => {
      const tokens = await byInstance(`sum by (instance) (lightreasoner_inference_tokens_streamed_total{job="${INFERENCE_JOB}", mode="trajectory"})`);
      return (await prometheus.query("up")).length === 3 && instances.every((i) => (tokens.get(i) ?? 0) > 0);
    });
    const up = await prometheus.query("up");
    expect(up.map((s) => [s.metric.job, s.metric.instance, s.value[1]]).sort()).toEqual(
      [...instances.map((i) => [INFERENCE_JOB, i, "1"]), [TRAINER_JOB, instance(trainer), "1"]].sort(),
    );
    for (const expr of [
      `sum by (instance) (lightreasoner_inference_trajectory_steps_streamed_total)`,
      `sum by (instance) (lightreasoner_inference_batch_size_count{model="expert"})`,
      `sum by (instance) (lightreasoner_inference_queue_wait_seconds_count)`,
      `sum by (instance) (lightreasoner_inference_requests_total{method="InferenceService/StreamTrajectories", code="OK"})`,
      `sum by (instance) (lightreasoner_inference_adapter_version)`,
    ]) {
      const values = await byInstance(expr);
      expect([...values.keys()].sort(), expr).toEqual(instances);
      for (const v of values.values()) expect(v, expr).toBeGreaterThan(0);
    }
    expect([...(await byInstance("lightreasoner_inference_active_streams")).keys()].sort()).toEqual(instances);
  });

  it("shows the trainer's run: steps seen and their KLs, selection, loss, optimizer steps, a succeeded run", async () => {
    await eventually("the finished run in Prometheus", async () => (await byInstance(`lightreasoner_trainer_runs{state="succeeded"}`)).get(instance(trainer)) === 1);
    const value = async (expr: string) => {
      const result = await prometheus.query(expr);
      expect(result.map((s) => s.metric.instance), expr).toEqual([instance(trainer)]);
      return Number(result[0].value[1]);
    };
    const seen = await value("lightreasoner_trainer_steps_seen_total");
    expect(seen).toBeGreaterThan(0);
    expect(await value("lightreasoner_trainer_step_kl_nats_count")).toBe(seen);
    // Every step the trainer saw was streamed by one of the two replicas.
    const streamed = await prometheus.query(`sum(lightreasoner_inference_trajectory_steps_streamed_total{job="${INFERENCE_JOB}"})`);
    expect(Number(streamed[0].value[1])).toBe(seen);
    // Per-run gauges carry the run's id (the one run here: its values are the trainer's totals).
    const ratio = await value('lightreasoner_trainer_selection_ratio{run="prometheus-e2e"}');
    expect(ratio).toBeGreaterThan(0);
    expect(ratio).toBeLessThanOrEqual(1);
    expect(ratio).toBeCloseTo((await value("lightreasoner_trainer_steps_selected_total")) / seen, 6);
    expect(await value("lightreasoner_trainer_optimizer_steps_total")).toBe(OPTIMIZER_STEPS);
    expect(await value('lightreasoner_trainer_loss_nats{run="prometheus-e2e"}')).toBeGreaterThan(0);
    // A run that is over has no last-progress series (the small run may end before a scrape
    // sees it running; test/trainer/run-metrics.test.ts checks the series of runs in flight).
    expect(await prometheus.query("lightreasoner_trainer_last_progress_timestamp_seconds")).toEqual([]);
    expect(await value(`lightreasoner_trainer_runs{state="running"}`)).toBe(0);
  });

  it("has data for every Grafana panel but the error ratio", async () => {
    const queries = dashboardQueries();
    expect(queries.length).toBeGreaterThanOrEqual(12);
    let empty: string[] = [];
    // rate() needs two scrapes of a series inside its window: poll past the first ones.
    await eventually("the panels' data", async () => {
      empty = [];
      for (const { panel, expr } of queries) if ((await prometheus.query(expr)).length === 0) empty.push(panel);
      return empty.length === 1;
    }, 15_000).catch(() => undefined);
    expect(empty).toEqual(["Error ratio, by replica"]);
  });

  it("loads the alert rules and evaluates them without error, none firing on a healthy system", async () => {
    const rules = async () => ((await prometheus.get("/api/v1/rules")).groups as any[]).flatMap((g) => g.rules);
    // Rules evaluated before the first scrape see no `up` yet (InferenceReplicasAbsent pends):
    // wait for evaluations over the scraped targets.
    let last: any[] = [];
    await eventually("every rule healthy and inactive", async () => {
      last = await rules();
      return last.length > 0 && last.every((r) => r.health === "ok" && r.state === "inactive");
    }).catch((err) => {
      throw new Error(`${(err as Error).message}: ${JSON.stringify(last.map((r) => [r.name, r.health, r.state, r.lastError]))}`);
    });
    expect(last.map((r) => r.name).sort()).toEqual(["AdapterVersionsDisagree", "InferenceErrorRatioHigh", "InferenceQueueWaitHigh", "InferenceReplicaDown", "InferenceReplicasAbsent", "TrainerDown", "TrainingStalled"]);
  });

  it("turns a killed replica into up == 0 and a pending InferenceReplicaDown for it", async () => {
    const victim = replicas[1];
    victim.child.kill("SIGKILL");
    await victim.exited;
    await eventually("the alert to go pending", async () => {
      const { alerts } = await prometheus.get("/api/v1/alerts");
      return alerts.some((a: any) => a.labels.alertname === "InferenceReplicaDown" && a.labels.instance === instance(victim) && a.state === "pending");
    });
    const down = await prometheus.query(`up{job="${INFERENCE_JOB}"} == 0`);
    expect(down.map((s) => s.metric.instance)).toEqual([instance(victim)]);
  });
});
