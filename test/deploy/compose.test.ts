// deploy/compose.yaml (and its GPU override) parse and are wired consistently: inference
// replicas reachable on the ports their command serves, the trainer pointed at all of them
// through the service's DNS name, Prometheus scraping every replica and the trainer on the
// ports they serve metrics on, Grafana provisioned with that Prometheus and a dashboard with
// the panels operators need, every mounted or built path present, and both services listening
// on every interface with the token of one compose secret (which the trainer also presents to
// the replicas). (The compose commands really start: prometheus-e2e.test.ts runs them.)
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseDocument } from "yaml";
import { deployDir, flagValue, readYaml, root } from "./deploy-files.ts";

const compose = readYaml("compose.yaml");
const gpu = readYaml("compose.gpu.yaml");
const prometheusConfig = readYaml("prometheus/prometheus.yml");
const { inference, trainer, prometheus, grafana } = compose.services;

/** "./x:/y:ro" -> { source: "./x", target: "/y" }. */
const mount = (spec: string) => {
  const [source, target] = spec.split(":");
  return { source, target };
};

describe("deploy/compose.yaml", () => {
  it("parses without errors or duplicate keys, with the four services", () => {
    for (const file of ["compose.yaml", "compose.gpu.yaml"]) {
      const doc = parseDocument(readFileSync(join(deployDir, file), "utf8"), { uniqueKeys: true });
      expect(doc.errors, file).toEqual([]);
    }
    expect(Object.keys(compose.services).sort()).toEqual(["grafana", "inference", "prometheus", "trainer"]);
    expect(Object.keys(gpu.services).sort()).toEqual(["inference", "trainer"]);
  });

  it("runs several inference replicas, each serving gRPC and metrics on the ports it exposes", () => {
    expect(inference.deploy.replicas).toBeGreaterThanOrEqual(2);
    // Replicas cannot share a host port: they are reached on the compose network only.
    expect(inference.ports).toBeUndefined();
    expect(inference.command.slice(0, 2)).toEqual(["serve", "inference"]);
    const ports = [flagValue(inference.command, "--port"), flagValue(inference.command, "--metrics-port")];
    expect(inference.expose).toEqual(ports);
    expect(parseInt(inference.stop_grace_period, 10)).toBeGreaterThan(Number(flagValue(inference.command, "--shutdown-deadline-ms")) / 1000 + 1);
  });

  it("points the trainer at every replica through the service's DNS name", () => {
    expect(trainer.command.slice(0, 2)).toEqual(["serve", "trainer"]);
    expect(flagValue(trainer.command, "--inference")).toBe(`dns:///inference:${flagValue(inference.command, "--port")}`);
    expect(trainer.depends_on.inference.condition).toBe("service_healthy");
    // Runs (samples, checkpoints, adapters) live on the named volume.
    const volume = mount(trainer.volumes[0]);
    expect(Object.keys(compose.volumes)).toContain(volume.source);
    expect(flagValue(trainer.command, "--runs-dir")!.startsWith(`${volume.target}/`)).toBe(true);
    expect(trainer.expose).toContain(flagValue(trainer.command, "--metrics-port"));
    expect(trainer.ports).toEqual([`${flagValue(trainer.command, "--port")}:${flagValue(trainer.command, "--port")}`]);
  });

  it("has Prometheus scrape each replica and the trainer where they serve metrics", () => {
    const jobs = Object.fromEntries(prometheusConfig.scrape_configs.map((j: any) => [j.job_name, j]));
    const inferenceJob = jobs["lightreasoner-inference"];
    // One target per A record of the service name: every replica, however many.
    expect(inferenceJob.dns_sd_configs).toEqual([{ names: ["inference"], type: "A", port: Number(flagValue(inference.command, "--metrics-port")), refresh_interval: "15s" }]);
    expect(jobs["lightreasoner-trainer"].static_configs).toEqual([{ targets: [`trainer:${flagValue(trainer.command, "--metrics-port")}`] }]);
    // Prometheus reads this very file and its rules from the mounted folder.
    const config = mount(prometheus.volumes[0]);
    expect(config).toEqual({ source: "./prometheus", target: "/etc/prometheus" });
    expect(prometheus.command).toContain("--config.file=/etc/prometheus/prometheus.yml");
    for (const rules of prometheusConfig.rule_files) expect(existsSync(join(deployDir, "prometheus", rules)), rules).toBe(true);
  });

  it("provisions Grafana with that Prometheus and the LightReasoner dashboard", () => {
    const mounts = Object.fromEntries(grafana.volumes.map((v: string) => [mount(v).source, mount(v).target]));
    expect(mounts["./grafana/provisioning"]).toBe("/etc/grafana/provisioning");
    const datasources = readYaml("grafana/provisioning/datasources/prometheus.yaml").datasources;
    expect(datasources).toHaveLength(1);
    const promPort = mount(prometheus.ports[0]).target;
    expect(datasources[0]).toMatchObject({ type: "prometheus", uid: "prometheus", url: `http://prometheus:${promPort}`, isDefault: true });
    const provider = readYaml("grafana/provisioning/dashboards/lightreasoner.yaml").providers[0];
    expect(provider.options.path).toBe(mounts["./grafana/dashboards"]);
    expect(grafana.environment.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH).toBe(`${provider.options.path}/lightreasoner.json`);

    const dashboard = JSON.parse(readFileSync(join(deployDir, "grafana", "dashboards", "lightreasoner.json"), "utf8"));
    const panels = dashboard.panels as any[];
    for (const p of panels) {
      expect(p.datasource, p.title).toEqual({ type: "prometheus", uid: datasources[0].uid });
      for (const t of p.targets) expect(t.datasource, p.title).toEqual(p.datasource);
    }
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    // The panels the issue asks for, each on the series that measures it.
    const exprOf = (title: RegExp) => {
      const panel = panels.find((p) => title.test(p.title));
      expect(panel, String(title)).toBeDefined();
      return panel.targets.map((t: any) => t.expr).join("\n");
    };
    expect(exprOf(/^Tokens per second/)).toContain("rate(lightreasoner_inference_tokens_streamed_total");
    expect(exprOf(/^Active streams/)).toContain("lightreasoner_inference_active_streams");
    expect(exprOf(/^Batch size/)).toContain("lightreasoner_inference_batch_size_sum");
    expect(exprOf(/^Queue wait/)).toContain("lightreasoner_inference_queue_wait_seconds_bucket");
    expect(exprOf(/^KL/)).toContain("lightreasoner_trainer_step_kl_nats_bucket");
    expect(exprOf(/^Selection ratio/)).toContain("lightreasoner_trainer_selection_ratio");
    expect(exprOf(/^Training loss/)).toContain("lightreasoner_trainer_loss_nats");
    // Per-run gauges: one line per run, named by its run label.
    for (const title of [/^Selection ratio/, /^Training loss/]) expect(panels.find((p) => title.test(p.title)).targets.map((t: any) => t.legendFormat)).toEqual(["{{run}} on {{instance}}"]);
    expect(exprOf(/^Adapter version, by replica/)).toMatch(/by \(instance, version\) \(lightreasoner_inference_adapter_version == 1\)/);
  });

  it("builds the inference and trainer images from Dockerfiles and stages that exist", () => {
    for (const [name, service, target] of [
      ["inference", inference, "cpu"],
      ["trainer", trainer, "cpu"],
      ["inference", gpu.services.inference, "gpu"],
      ["trainer", gpu.services.trainer, "gpu"],
    ] as const) {
      const build = { ...compose.services[name].build, ...service.build };
      const dockerfile = join(deployDir, build.context, build.dockerfile);
      expect(existsSync(dockerfile), dockerfile).toBe(true);
      expect(join(deployDir, build.context)).toBe(root);
      expect(build.target).toBe(target);
      expect(readFileSync(dockerfile, "utf8")).toMatch(new RegExp(`^FROM \\S+ AS ${target}$`, "m"));
      expect(service.image).toBe(`lightreasoner-${name}:${target}`);
    }
  });

  it("mounts only host paths that exist", () => {
    for (const [name, service] of Object.entries<any>(compose.services)) {
      for (const v of service.volumes ?? []) {
        const { source } = mount(v);
        if (source.startsWith(".")) expect(existsSync(join(deployDir, source)), `${name}: ${v}`).toBe(true);
        else expect(Object.keys(compose.volumes), `${name}: ${v}`).toContain(source);
      }
    }
  });

  it("listens on every interface and reads the token from one compose secret, in both services", () => {
    // The secret's file is created by the operator (deploy/README.md) and ignored by git.
    expect(Object.keys(compose.secrets)).toEqual(["auth-token"]);
    expect(compose.secrets["auth-token"]).toEqual({ file: "./auth-token" });
    expect(readFileSync(join(root, ".gitignore"), "utf8").split("\n")).toContain("/deploy/auth-token");
    for (const [name, service] of [["inference", inference], ["trainer", trainer], ["inference (gpu)", gpu.services.inference]] as const) {
      expect(flagValue(service.command, "--host"), name).toBe("0.0.0.0");
      expect(flagValue(service.command, "--auth-token-file"), name).toBe("/run/secrets/auth-token");
      expect(service.command, name).not.toContain("--allow-unauthenticated");
    }
    for (const service of [inference, trainer]) expect(service.secrets).toEqual(["auth-token"]);
    // The trainer presents its own token to the replicas: no separate client flag, no TLS to configure.
    expect(trainer.command.filter((a: string) => a.startsWith("--inference-tls"))).toEqual([]);
    // The token never sits in a command line or the environment, where `docker inspect` shows it.
    for (const service of Object.values<any>(compose.services)) expect(JSON.stringify(service.environment ?? {})).not.toMatch(/LIGHTREASONER_AUTH_TOKEN/);
  });

  it("the GPU override asks for a GPU per replica and CUDA, keeping the ports", () => {
    const command = gpu.services.inference.command;
    expect(flagValue(command, "--execution-provider")).toBe("cuda");
    for (const flag of ["--port", "--metrics-port", "--expert", "--amateur", "--host", "--auth-token-file"]) expect(flagValue(command, flag), flag).toBe(flagValue(inference.command, flag));
    for (const name of ["inference", "trainer"]) {
      expect(gpu.services[name].deploy.resources.reservations.devices, name).toEqual([{ driver: "nvidia", count: 1, capabilities: ["gpu"] }]);
    }
  });
});
