// The contract is not tied to our TypeScript: clients/python/lightreasoner_client.py (Debian's
// python3-grpcio and python3-protobuf, message classes built at run time from a descriptor
// set that buf compiles from proto/) streams trajectories from a real inference process. It
// receives every step with both models' full distributions, which it checks itself
// (normalised, vocab_size long), and a finish; its own KL and plausible sets, computed in
// Python from FULL, equal what the server sends in SPARSE for the same seeded trajectory.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withinSummaryTolerance } from "#inference/model/pair-summary-graph.ts";
import { composeInferenceArgs } from "./deploy-files.ts";
import { killAll, localArgs, root, runToEnd, startReplica } from "./processes.ts";
import type { Replica } from "./processes.ts";

/** Debian's python3 first: a pyenv or venv python on PATH usually lacks the Debian modules. */
const python = ["/usr/bin/python3", "python3"].find((p) => spawnSync(p, ["-c", "import grpc, google.protobuf"], { stdio: "ignore" }).status === 0);
const CLIENT = join(root, "clients", "python", "lightreasoner_client.py");

type Line = Record<string, any>;

describe.skipIf(python === undefined)("the Python grpcio client (no python3 with grpc and google.protobuf: apt-get install python3-grpcio python3-protobuf)", () => {
  let dir: string;
  let replica: Replica;
  let descriptors: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "lr-python-"));
    descriptors = join(dir, "lightreasoner.binpb");
    // buf compiles proto/ itself (no generated TypeScript involved) into a FileDescriptorSet.
    await runToEnd(join(root, "node_modules", ".bin", "buf"), ["build", "-o", descriptors]);
    replica = await startReplica(localArgs(composeInferenceArgs(), { "--host": "127.0.0.1", "--port": "0", "--metrics-port": "0" }));
  });
  afterAll(() => {
    killAll();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function client(encoding: "full" | "sparse"): Promise<Line[]> {
    const args = [CLIENT, "--target", replica.address, "--descriptors", descriptors, "--prompt", "Zoe has 3 cards. Tom has 4 more cards than Zoe.", "--encoding", encoding, "--max-new-tokens", "12", "--seed", "42"];
    const { stdout } = await runToEnd(python!, args);
    return stdout.trim().split("\n").map((l) => JSON.parse(l) as Line);
  }

  it("streams a trajectory: started, steps with both models' distributions, finished", async () => {
    const lines = await client("full");
    const [info, started] = lines;
    const steps = lines.filter((l) => l.event === "step");
    const finished = lines[lines.length - 1];
    expect(info).toMatchObject({ event: "info", expert: "expert", amateur: "amateur", adapter_version: "" });
    expect(info.vocab_size).toBeGreaterThan(0);
    expect(started.event).toBe("started");
    expect(started.prompt_token_ids.length).toBeGreaterThan(0);
    expect(started.seed).toBe(42);
    expect(steps.length).toBeGreaterThan(0);
    steps.forEach((s, i) => {
      expect(s.step).toBe(i);
      expect(s.position).toBe(started.prompt_token_ids.length + i);
      expect(s.encoding).toBe("full");
      for (const model of ["expert", "amateur"]) {
        expect(s[model].size, `${model} step ${i}`).toBe(info.vocab_size);
        // log-probabilities of a distribution: logsumexp = 0.
        expect(Math.abs(s[model].log_sum_exp), `${model} step ${i}`).toBeLessThan(1e-4);
      }
      expect(s.kl).toBeGreaterThanOrEqual(0);
      expect(s.plausible_token_ids.length).toBeGreaterThan(0);
    });
    expect(finished.event).toBe("finished");
    expect(["FINISH_REASON_LENGTH", "FINISH_REASON_EOS"]).toContain(finished.finish_reason);
    expect(finished.completion_tokens).toBe(steps.length);
    expect(finished.completion_text).toBe(steps.map((s) => s.token_text).join(""));
  });

  it("computes from FULL the KL and plausible sets the server sends in SPARSE", async () => {
    const full = (await client("full")).filter((l) => l.event === "step");
    const sparse = (await client("sparse")).filter((l) => l.event === "step");
    // The same seed gives the same trajectory.
    expect(sparse.map((s) => s.token_id)).toEqual(full.map((s) => s.token_id));
    sparse.forEach((s, i) => {
      expect(s.encoding).toBe("sparse");
      // The server's KL is a float32 sum on ONNX Runtime, the client's a float64 one from FULL.
      expect(withinSummaryTolerance(s.kl, full[i].kl), `KL at step ${i}: ${s.kl} vs ${full[i].kl}`).toBe(true);
      expect([...s.plausible_token_ids].sort((a: number, b: number) => a - b), `plausible set at step ${i}`).toEqual(full[i].plausible_token_ids);
      expect(s.expert.plausible_log_probs).toHaveLength(s.plausible_token_ids.length);
      expect(s.amateur.plausible_log_probs).toHaveLength(s.plausible_token_ids.length);
    });
  });

  it("reports an unreachable server as a gRPC status and exits 1", () => {
    const result = spawnSync(python!, [CLIENT, "--target", "127.0.0.1:1", "--descriptors", descriptors, "--prompt", "x", "--timeout", "2"], { encoding: "utf8" });
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/^lightreasoner_client: (UNAVAILABLE|DEADLINE_EXCEEDED): /);
  });
});
