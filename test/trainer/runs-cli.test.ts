// `lightreasoner runs ...` as an operator uses it, against a trainer service on loopback:
// start a run from a RunConfig JSON file and follow it, list it, and get clear one-line
// errors for an unknown run and a malformed config.
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InferenceServer } from "#inference/main.ts";
import { startServer, writeTinyPair } from "#test/inference/helpers.ts";
import type { TinyPair } from "#test/inference/helpers.ts";
import { writeProblems } from "#test/trainer-sampling/helpers.ts";
import { startTrainer } from "./helpers.ts";

const run = promisify(execFile);

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ["bin/lightreasoner.mjs", ...args], { timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe("lightreasoner runs (the trainer's command-line client)", () => {
  let pair: TinyPair;
  let inference: InferenceServer;
  let trainer: Awaited<ReturnType<typeof startTrainer>>;
  beforeAll(async () => {
    pair = writeTinyPair();
    inference = await startServer(pair);
    trainer = await startTrainer(pair.expertDir, [inference.address], join(pair.root, "runs"));
  });
  afterAll(async () => {
    await trainer?.close();
    await inference?.close(1000);
    pair?.remove();
  });

  it("starts a run from a JSON config, follows it to the end, lists it", async () => {
    const config = join(pair.root, "run.json");
    const problems = writeProblems(pair.root, 6).file;
    // Proto field names and enum names, as an operator writes them.
    writeFileSync(config, JSON.stringify({ mode: "RUN_MODE_OFFLINE", problems: { path: problems }, selection: { beta: 3.3 }, sampling: { params: { max_new_tokens: 12, temperature: 1 } }, optimization: { max_steps: 2, batch_size: 4 }, seed: 4 }));
    const started = await cli(["runs", "start", config, "--id", "from-cli", "--trainer", trainer.server.address]);
    expect(started.code, started.stderr).toBe(0);
    expect(started.stdout).toMatch(/started from-cli/);
    const final = JSON.parse(started.stdout.slice(started.stdout.indexOf("{"))) as { state: string; counters: { optimizerSteps: number } };
    expect(final.state).toBe("RUN_STATE_SUCCEEDED");
    expect(final.counters.optimizerSteps).toBe(2);

    const listed = await cli(["runs", "list", "--trainer", trainer.server.address]);
    expect(listed.stdout).toMatch(/^from-cli\s+SUCCEEDED\s+done\s+6\/6 problems/m);
  });

  it("says what was wrong, in one line, with the status code", async () => {
    const missing = await cli(["runs", "get", "nope", "--trainer", trainer.server.address]);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim()).toBe('lightreasoner: NOT_FOUND: no run with id "nope"');

    const bad = join(pair.root, "bad.json");
    writeFileSync(bad, JSON.stringify({ selection: { beta: "high" } }));
    const refused = await cli(["runs", "start", bad, "--trainer", trainer.server.address]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/bad\.json: not a RunConfig .*beta/);

    const invalid = join(pair.root, "invalid.json");
    writeFileSync(invalid, JSON.stringify({ problems: { path: "x.jsonl" }, selection: { alpha: 3 } }));
    const rejected = await cli(["runs", "start", invalid, "--validate", "--trainer", trainer.server.address]);
    expect(rejected.code).toBe(1);
    expect(rejected.stderr.trim()).toMatch(/^lightreasoner: INVALID_ARGUMENT: selection\.alpha: /);
  });
});
