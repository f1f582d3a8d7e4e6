// deploy/docker: the Dockerfiles lint clean (dockerfile-utils, the linter behind VS Code's
// Docker support) and hold what the issue asks of an image, checked statically since no
// Docker engine runs here: multi-stage, runtime stages that copy only production
// node_modules and the sources, a numeric non-root user, a HEALTHCHECK through the gRPC health
// probe on the port the command serves, the CUDA provider installed and selected in the
// inference gpu stage, tfjs-node-gpu in the trainer's, and a build context that holds every
// file a COPY names.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { validate } from "dockerfile-utils";
import { describe, expect, it } from "vitest";
import { deployDir, flagValue, root } from "./deploy-files.ts";
import { RECOMMENDED_GLIBC_TUNABLES, RECOMMENDED_NODE_FLAGS } from "#inference/model/process-settings.ts";

interface Instruction {
  keyword: string;
  args: string;
  line: number;
}

interface Stage {
  name: string;
  base: string;
  instructions: Instruction[];
}

/** Instructions (continuations joined, comments dropped) grouped into stages. */
function stagesOf(text: string): Stage[] {
  const stages: Stage[] = [];
  let pending = "";
  let startLine = 0;
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (pending === "" && (line === "" || line.startsWith("#"))) return;
    if (pending === "") startLine = i + 1;
    if (line.startsWith("#")) return;
    pending += `${line.replace(/\\$/, "")} `;
    if (line.endsWith("\\")) return;
    const [keyword, ...rest] = pending.trim().split(/\s+/);
    const instruction = { keyword: keyword.toUpperCase(), args: rest.join(" "), line: startLine };
    pending = "";
    if (instruction.keyword === "FROM") {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(instruction.args)!;
      stages.push({ base: m[1], name: m[2] ?? `#${stages.length}`, instructions: [] });
    } else if (stages.length > 0) stages[stages.length - 1].instructions.push(instruction);
  });
  return stages;
}

/** The exec form of CMD and ENTRYPOINT: a JSON array. */
const exec = (args: string): string[] => JSON.parse(args);
const find = (stage: Stage, keyword: string) => stage.instructions.filter((i) => i.keyword === keyword);

const files = {
  inference: join(deployDir, "docker", "inference.Dockerfile"),
  trainer: join(deployDir, "docker", "trainer.Dockerfile"),
};

describe.each(Object.entries(files))("deploy/docker/%s.Dockerfile", (service, file) => {
  const text = readFileSync(file, "utf8");
  const stages = stagesOf(text);
  const stage = (name: string) => stages.find((s) => s.name === name)!;
  const grpcPort = service === "inference" ? "50051" : "50052";
  const metricsPort = service === "inference" ? "9464" : "9465";
  const serviceName = service === "inference" ? "lightreasoner.v1.InferenceService" : "lightreasoner.v1.TrainerService";

  it("lints clean", () => {
    expect(validate(text).map((d) => `line ${d.range.start.line + 1}: ${d.message}`)).toEqual([]);
  });

  it("is multi-stage and builds the cpu image by default, the gpu one as a target", () => {
    expect(stages.map((s) => s.name)).toEqual(["deps", "deps-gpu", "app", "gpu", "cpu"]);
    // The last stage is what `docker build` without --target produces.
    expect(stages[stages.length - 1].name).toBe("cpu");
  });

  it.each(["cpu", "gpu"])("%s: only runtime pieces, a non-root user, the gRPC health check, the service's ports", (variant) => {
    const s = stage(variant);
    const deps = variant === "gpu" ? "deps-gpu" : "deps";
    const copies = find(s, "COPY").map((c) => c.args);
    expect(copies).toContain(`--from=${deps} /app/node_modules /app/node_modules`);
    expect(copies).toContain("--from=app /app /app");
    for (const c of copies) expect(c, "nothing from the build context directly").toMatch(/^--from=/);
    expect(find(s, "RUN").every((r) => !/npm (ci|install)/.test(r.args))).toBe(true);
    const user = find(s, "USER");
    expect(user.map((u) => u.args)).toEqual(["10001:10001"]);
    // The user is set before the process starts: after it, nothing runs as root.
    const last = s.instructions[s.instructions.length - 1];
    expect(user[0].line).toBeLessThan(last.line);
    const cmd = exec(find(s, "CMD")[0].args);
    const nodeFlags = service === "inference" ? RECOMMENDED_NODE_FLAGS : [];
    expect(exec(find(s, "ENTRYPOINT")[0].args)).toEqual(["node", ...nodeFlags, "/app/bin/lightreasoner.mjs"]);
    expect(cmd.slice(0, 2)).toEqual(["serve", service]);
    // A container's port is reached from outside it: the service's loopback default would hide it.
    expect(flagValue(cmd, "--host")).toBe("0.0.0.0");
    expect(flagValue(cmd, "--port")).toBe(grpcPort);
    expect(flagValue(cmd, "--metrics-port")).toBe(metricsPort);
    expect(find(s, "EXPOSE").map((e) => e.args)).toEqual([`${grpcPort} ${metricsPort}`]);
    const health = find(s, "HEALTHCHECK")[0].args;
    const probe = JSON.parse(health.slice(health.indexOf("CMD") + 3)) as string[];
    expect(probe.slice(0, 2)).toEqual(["node", "/app/deploy/docker/grpc-health-probe.mjs"]);
    expect(flagValue(probe, "--addr")).toBe(`127.0.0.1:${grpcPort}`);
    expect(flagValue(probe, "--service")).toBe(serviceName);
  });

  it("installs production dependencies only, from the lockfile", () => {
    for (const name of ["deps", "deps-gpu"]) {
      const install = find(stage(name), "RUN").map((r) => r.args).find((a) => a.includes("npm ci"))!;
      expect(install, name).toContain("--omit=dev");
      expect(find(stage(name), "COPY")[0].args).toBe("package.json package-lock.json .npmrc ./");
    }
  });

  it("copies only files that exist, and its .dockerignore lets them into the context", () => {
    const ignore = readFileSync(`${file}.dockerignore`, "utf8").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
    expect(ignore[0]).toBe("**");
    const included = ignore.filter((l) => l.startsWith("!")).map((l) => l.slice(1));
    const sources = stages.flatMap((s) => find(s, "COPY").filter((c) => !c.args.startsWith("--from=")).flatMap((c) => c.args.split(/\s+/).slice(0, -1)));
    expect(sources.length).toBeGreaterThan(5);
    for (const source of sources) {
      expect(existsSync(join(root, source)), source).toBe(true);
      expect(included.some((p) => source === p || source.startsWith(`${p}/`)), `${source} is excluded from the build context`).toBe(true);
    }
  });

  if (service === "inference") {
    it("gpu: installs ONNX Runtime's CUDA provider, checks it is there, and insists on it", () => {
      expect(find(stage("deps-gpu"), "ENV").map((e) => e.args)).toContain("ONNXRUNTIME_NODE_INSTALL=cuda12");
      expect(find(stage("deps-gpu"), "RUN")[0].args).toContain("libonnxruntime_providers_cuda.so");
      expect(find(stage("deps"), "ENV")).toEqual([]);
      expect(flagValue(exec(find(stage("gpu"), "CMD")[0].args), "--execution-provider")).toBe("cuda");
      expect(flagValue(exec(find(stage("cpu"), "CMD")[0].args), "--execution-provider")).toBe("cpu");
      expect(stage("gpu").base).toBe("${CUDA_IMAGE}");
      expect(text).toMatch(/^ARG CUDA_IMAGE=nvidia\/cuda:12\.\S+-cudnn-runtime-/m);
    });

    it("starts both runtime images with the glibc tunables and Node flags the service recommends, as npm run bench does", () => {
      for (const name of ["gpu", "cpu"]) expect(find(stage(name), "ENV").map((e) => e.args)).toContain(`GLIBC_TUNABLES=${RECOMMENDED_GLIBC_TUNABLES}`);
      const scripts = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts;
      expect(scripts.bench).toContain(`GLIBC_TUNABLES=${RECOMMENDED_GLIBC_TUNABLES} node ${RECOMMENDED_NODE_FLAGS.join(" ")} bin/lightreasoner.mjs bench`);
    });
  } else {
    it("gpu: installs tfjs-node-gpu (failing the build if npm skipped it) and forces that backend", () => {
      const install = find(stage("deps-gpu"), "RUN").map((r) => r.args).find((a) => a.includes("npm ci"))!;
      expect(install).not.toContain("--omit=optional");
      expect(install).toContain("require.resolve('@tensorflow/tfjs-node-gpu')");
      expect(find(stage("deps"), "RUN")[0].args).toContain("--omit=optional");
      expect(find(stage("gpu"), "ENV").map((e) => e.args)).toContain("LR_TFJS_BACKEND=node-gpu");
      expect(find(stage("cpu"), "ENV").map((e) => e.args)).toContain("LR_TFJS_BACKEND=wasm");
      expect(text).toMatch(/^ARG CUDA_IMAGE=nvidia\/cuda:11\.\S+-cudnn8-runtime-/m);
      expect(flagValue(exec(find(stage("cpu"), "CMD")[0].args), "--inference")).toBe("dns:///inference:50051");
    });
  }
});

describe("the Dockerfile linter", () => {
  it("reports broken instructions", () => {
    const broken = "FROM node:20 AS deps\nEXPOSE grpc\nHEALTHCHECK --interval=soon CMD true\nUSER\n";
    expect(validate(broken).map((d) => d.message)).toEqual(["Invalid containerPort: grpc", "time: invalid duration soon", "Instruction has no arguments"]);
  });
});
