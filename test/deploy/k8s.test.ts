// deploy/k8s: the base and both overlays render (kustomize's resources, patches and images),
// every object validates against the Kubernetes API schemas offline, strictly (no unknown
// field), broken manifests are rejected, and the wiring an operator relies on holds: gRPC
// probes on the served port, the trainer on the headless service, the HPA on the Deployment,
// GPUs only in the gpu overlay, non-root pods, both services listening on the pod's interfaces
// with the token of one Secret mounted as a file, and the PrometheusRule equal to the rule file.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import { KustomizeError, objectId, readManifests, renderKustomization } from "./kustomize.ts";
import type { K8sObject, Rendered } from "./kustomize.ts";
import { schemaErrors, unknownFieldErrors } from "./k8s-schema.ts";

const root = process.cwd();
const k8s = join(root, "deploy", "k8s");
const rendered = {
  base: renderKustomization(join(k8s, "base")),
  cpu: renderKustomization(join(k8s, "overlays", "cpu")),
  gpu: renderKustomization(join(k8s, "overlays", "gpu")),
};
type Variant = keyof typeof rendered;
const variants = Object.keys(rendered) as Variant[];

const find = (objects: Rendered[], kind: string, name: string): any => {
  const found = objects.find((r) => r.object.kind === kind && r.object.metadata.name === name);
  if (!found) throw new Error(`no ${kind}/${name}`);
  return found.object;
};
const container = (o: any) => o.spec.template.spec.containers[0];
/** The value after a flag in an args list (undefined when absent). */
const flag = (args: string[], name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);

const scratch = mkdtempSync(join(tmpdir(), "lr-k8s-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("the manifests validate against the Kubernetes API schemas", () => {
  it("renders base, cpu and gpu with the same ten objects", () => {
    const ids = (v: Variant) => rendered[v].map((r) => objectId(r.object)).sort();
    expect(ids("base")).toHaveLength(10);
    expect(ids("cpu")).toEqual(ids("base"));
    expect(ids("gpu")).toEqual(ids("base"));
    expect(new Set(rendered.base.map((r) => r.object.kind))).toEqual(
      new Set(["ServiceAccount", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "StatefulSet", "PodMonitor", "PrometheusRule"]),
    );
  });

  it.each(variants)("%s: every object passes its schema", async (variant) => {
    expect(await schemaErrors(rendered[variant])).toEqual([]);
  });

  it("every object of every variant has only fields the schemas define", () => {
    const all = variants.flatMap((v) => rendered[v].map((r) => ({ ...r, source: `${v}: ${r.source}` })));
    expect(unknownFieldErrors(all)).toEqual([]);
  });

  it("rejects broken manifests, naming the object and the field", async () => {
    const deployment = structuredClone(find(rendered.cpu, "Deployment", "inference")) as K8sObject;
    const typo = structuredClone(deployment) as any;
    typo.spec.template.spec.containers[0].readinesProbe = typo.spec.template.spec.containers[0].readinessProbe;
    const wrongType = structuredClone(deployment) as any;
    wrongType.spec.replicas = "two";
    const badQuantity = structuredClone(deployment) as any;
    badQuantity.spec.template.spec.containers[0].resources.requests.cpu = "two cores";
    const missing = structuredClone(deployment) as any;
    delete missing.spec.selector;
    const probePortName = structuredClone(deployment) as any;
    probePortName.spec.template.spec.containers[0].readinessProbe.grpc.port = "grpc";
    const rule = structuredClone(find(rendered.base, "PrometheusRule", "lightreasoner")) as any;
    rule.spec.groups[0].rules[0].for = 120;

    const source = "broken.yaml";
    const schema = await schemaErrors([wrongType, badQuantity, missing, probePortName, rule].map((object) => ({ source, object })));
    expect(schema).toHaveLength(5);
    expect(schema[0]).toMatch(/Deployment\/inference: .*spec\/replicas must be integer/);
    expect(schema[1]).toMatch(/resources\/requests\/cpu must match format "quantity"/);
    expect(schema[2]).toMatch(/spec must have required property selector/);
    expect(schema[3]).toMatch(/readinessProbe\/grpc\/port must be integer/);
    expect(schema[4]).toMatch(/PrometheusRule\/lightreasoner: .*for must be string/);
    // The schemas let an unknown field through; the strict check does not.
    expect(await schemaErrors([{ source, object: typo }])).toEqual([]);
    const strict = unknownFieldErrors([{ source, object: typo }]);
    expect(strict).toHaveLength(1);
    expect(strict[0]).toMatch(/^broken\.yaml Deployment\/inference at spec\.template\.spec\.containers\.readinesProbe: .*'"readinesProbe"' does not exist in type 'IContainer'/);
  });
});

describe("the renderer is honest about what it renders", () => {
  const write = (dir: string, files: Record<string, string>) => {
    mkdirSync(dir, { recursive: true });
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
    return dir;
  };
  const base = `apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ${join(k8s, "base")}\n`;

  it("refuses kustomize features it does not implement, by name", () => {
    const dir = write(join(scratch, "unsupported"), { "kustomization.yaml": `${base}namePrefix: dev-\n` });
    expect(() => renderKustomization(dir)).toThrow(KustomizeError);
    expect(() => renderKustomization(dir)).toThrow(/kustomization\.yaml: namePrefix: is not supported by this renderer/);
    const smp = write(join(scratch, "smp"), {
      "kustomization.yaml": `${base}patches:\n  - path: p.yaml\n    target: {kind: Deployment, name: inference}\n`,
      "p.yaml": "spec:\n  replicas: 3\n",
    });
    expect(() => renderKustomization(smp)).toThrow(/strategic merge patches are not supported/);
  });

  it("fails a patch whose path or target does not exist instead of skipping it", () => {
    const badPath = write(join(scratch, "bad-path"), {
      "kustomization.yaml": `${base}patches:\n  - patch: |-\n      - op: replace\n        path: /spec/template/spec/containers/3/image\n        value: x\n    target: {kind: Deployment, name: inference}\n`,
    });
    expect(() => renderKustomization(badPath)).toThrow(/replace \/spec\/template\/spec\/containers\/3\/image: .*past the end/);
    const noTarget = write(join(scratch, "no-target"), {
      "kustomization.yaml": `${base}patches:\n  - patch: "[]"\n    target: {kind: Deployment, name: training}\n`,
    });
    expect(() => renderKustomization(noTarget)).toThrow(/selects no object/);
  });

  it.skipIf(spawnSync("kubectl", ["version", "--client"], { stdio: "ignore" }).status !== 0)("renders what kubectl kustomize renders (kubectl installed)", () => {
    for (const variant of variants) {
      const dir = variant === "base" ? join(k8s, "base") : join(k8s, "overlays", variant);
      const text = execFileSync("kubectl", ["kustomize", dir], { encoding: "utf8" });
      const theirs = new Map(parseAllDocuments(text).map((d) => d.toJS() as K8sObject).map((o) => [objectId(o), o]));
      const ours = new Map(rendered[variant].map((r) => [objectId(r.object), r.object]));
      expect([...ours.keys()].sort()).toEqual([...theirs.keys()].sort());
      for (const [id, object] of ours) expect(object, `${variant} ${id}`).toEqual(theirs.get(id));
    }
  });
});

describe("what the manifests promise an operator", () => {
  it.each(variants)("%s: inference has gRPC probes on its served port and non-root, read-only containers", (variant) => {
    const deployment = find(rendered[variant], "Deployment", "inference");
    const c = container(deployment);
    const port = Number(flag(c.args, "--port"));
    expect(port).toBe(50051);
    expect(c.ports.find((p: any) => p.name === "grpc").containerPort).toBe(port);
    expect(c.ports.find((p: any) => p.name === "metrics").containerPort).toBe(Number(flag(c.args, "--metrics-port")));
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) expect(c[probe].grpc.port, probe).toBe(port);
    expect(c.readinessProbe.grpc.service).toBe("lightreasoner.v1.InferenceService");
    // A probe waits for the model step holding the server's event loop (up to 1.5 s measured at the 0.5B shape on 2 cores).
    for (const probe of ["readinessProbe", "livenessProbe"]) expect(c[probe].timeoutSeconds, probe).toBeGreaterThanOrEqual(5);
    // The pod outlives the server's drain: shutdown deadline + 1 s close < grace period.
    expect(Number(flag(c.args, "--shutdown-deadline-ms")) / 1000 + 1).toBeLessThan(deployment.spec.template.spec.terminationGracePeriodSeconds);
    for (const workload of [deployment, find(rendered[variant], "StatefulSet", "trainer")]) {
      const pod = workload.spec.template.spec;
      expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 10001, seccompProfile: { type: "RuntimeDefault" } });
      expect(pod.automountServiceAccountToken).toBe(false);
      expect(container(workload).securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
      expect(container(workload).resources.requests).toMatchObject({ cpu: expect.any(String), memory: expect.any(String) });
    }
  });

  it.each(variants)("%s: the trainer reaches every replica through the headless service and keeps its runs on a volume", (variant) => {
    const service = find(rendered[variant], "Service", "inference-headless");
    const deployment = find(rendered[variant], "Deployment", "inference");
    const trainer = find(rendered[variant], "StatefulSet", "trainer");
    expect(service.spec.clusterIP).toBe("None");
    expect(service.spec.selector).toEqual(deployment.spec.selector.matchLabels);
    expect(deployment.spec.template.metadata.labels).toMatchObject(deployment.spec.selector.matchLabels);
    const grpcPort = service.spec.ports.find((p: any) => p.name === "grpc");
    expect(flag(container(trainer).args, "--inference")).toBe(`dns:///${service.metadata.name}:${grpcPort.port}`);
    const runsDir = flag(container(trainer).args, "--runs-dir")!;
    const mount = container(trainer).volumeMounts.find((m: any) => m.name === "data");
    expect(runsDir.startsWith(`${mount.mountPath}/`)).toBe(true);
    expect(trainer.spec.volumeClaimTemplates[0].metadata.name).toBe("data");
    expect(find(rendered[variant], "Service", trainer.spec.serviceName).spec.clusterIP).toBe("None");
  });

  it.each(variants)("%s: both services listen on the pod's interfaces and read the token of one Secret from a file", (variant) => {
    const secretNames = new Set<string>();
    for (const workload of [find(rendered[variant], "Deployment", "inference"), find(rendered[variant], "StatefulSet", "trainer")]) {
      const c = container(workload);
      const what = `${variant} ${workload.kind}/${workload.metadata.name}`;
      expect(flag(c.args, "--host"), what).toBe("0.0.0.0");
      expect(c.args, what).not.toContain("--allow-unauthenticated");
      // The file lies in a read-only mount of a secret volume, holding the Secret's key as that file.
      const tokenFile = flag(c.args, "--auth-token-file")!;
      const mount = c.volumeMounts.find((m: any) => tokenFile.startsWith(`${m.mountPath}/`));
      expect(mount, what).toMatchObject({ readOnly: true });
      const volume = workload.spec.template.spec.volumes.find((v: any) => v.name === mount.name);
      expect(volume.secret.optional, `${what}: a pod without the Secret must not start open`).not.toBe(true);
      const item = volume.secret.items.find((i: any) => i.path === tokenFile.slice(mount.mountPath.length + 1));
      expect(item, what).toEqual({ key: "token", path: "token" });
      // Readable by the pod's group only (0440), the group the pod runs as.
      expect(volume.secret.defaultMode).toBe(0o440);
      expect(workload.spec.template.spec.securityContext.fsGroup).toBe(10001);
      secretNames.add(volume.secret.secretName);
      // Never in the environment, where it would show in `kubectl describe` and crash dumps.
      expect(JSON.stringify(c.env ?? [])).not.toMatch(/LIGHTREASONER_AUTH_TOKEN/);
    }
    // One Secret: the trainer presents the token the replicas accept.
    expect([...secretNames]).toEqual(["lightreasoner-auth"]);
    expect(flag(container(find(rendered[variant], "StatefulSet", "trainer")).args, "--inference-tls-ca")).toBeUndefined();
  });

  it.each(variants)("%s: the HPA scales the inference Deployment on load, with a PDB beside it", (variant) => {
    const hpa = find(rendered[variant], "HorizontalPodAutoscaler", "inference");
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: "apps/v1", kind: "Deployment", name: "inference" });
    expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(2);
    const waiting = hpa.spec.metrics.find((m: any) => m.type === "Pods");
    expect(waiting.pods.metric).toEqual({ name: "lightreasoner_inference_sequences", selector: { matchLabels: { state: "waiting" } } });
    const cpu = hpa.spec.metrics.find((m: any) => m.type === "Resource");
    if (variant === "cpu") expect(cpu.resource).toEqual({ name: "cpu", target: { type: "Utilization", averageUtilization: 75 } });
    else expect(cpu).toBeUndefined();
    const pdb = find(rendered[variant], "PodDisruptionBudget", "inference");
    expect(pdb.spec.selector).toEqual(find(rendered[variant], "Deployment", "inference").spec.selector);
    expect(pdb.spec.maxUnavailable).toBeLessThan(hpa.spec.minReplicas);
  });

  it("asks for GPUs and CUDA only in the gpu overlay, and for the CPU provider in the cpu one", () => {
    const gpus = (v: Variant) => rendered[v].flatMap((r) => (r.object.kind === "Deployment" || r.object.kind === "StatefulSet" ? [container(r.object).resources.limits?.["nvidia.com/gpu"]] : []));
    expect(gpus("gpu")).toEqual(["1", "1"]);
    expect(gpus("cpu")).toEqual([undefined, undefined]);
    expect(gpus("base")).toEqual([undefined, undefined]);
    const args = (v: Variant) => container(find(rendered[v], "Deployment", "inference")).args;
    expect(flag(args("gpu"), "--execution-provider")).toBe("cuda");
    expect(flag(args("cpu"), "--execution-provider")).toBe("cpu");
    expect(flag(args("base"), "--execution-provider")).toBeUndefined();
    expect(container(find(rendered.gpu, "Deployment", "inference")).image).toBe("lightreasoner-inference:gpu");
    expect(container(find(rendered.cpu, "StatefulSet", "trainer")).image).toBe("lightreasoner-trainer:cpu");
    expect(find(rendered.gpu, "StatefulSet", "trainer").spec.template.spec.tolerations).toEqual([{ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }]);
  });

  it("scrapes each pod under the job names the alert rules use", () => {
    const rules = readFileSync(join(root, "deploy", "prometheus", "lightreasoner.rules.yml"), "utf8");
    for (const name of ["lightreasoner-inference", "lightreasoner-trainer"]) {
      const monitor = find(rendered.base, "PodMonitor", name);
      const workload = rendered.base.find((r) => ["Deployment", "StatefulSet"].includes(r.object.kind) && (r.object as any).spec.template.metadata.labels["app.kubernetes.io/name"] === name)!.object as any;
      expect(monitor.spec.selector.matchLabels).toEqual(workload.spec.selector.matchLabels);
      // jobLabel: the job is the pod's app.kubernetes.io/name, which is `name`.
      expect(workload.spec.template.metadata.labels[monitor.spec.jobLabel]).toBe(name);
      expect(container(workload).ports.map((p: any) => p.name)).toContain(monitor.spec.podMetricsEndpoints[0].port);
      expect(rules).toContain(`job="${name}"`);
    }
  });

  it("carries exactly the alert rules of deploy/prometheus/lightreasoner.rules.yml", () => {
    const file = parse(readFileSync(join(root, "deploy", "prometheus", "lightreasoner.rules.yml"), "utf8"));
    const [resource] = readManifests(join(k8s, "base", "prometheusrule.yaml"));
    expect((resource.object as any).spec.groups).toEqual(file.groups);
    const check = spawnSync(process.execPath, ["deploy/tools/sync-prometheus-rule.mjs", "--check"], { encoding: "utf8" });
    expect(check.status, check.stderr).toBe(0);
  });
});
