// Regressions for two hostile adapters, over real gRPC on loopback:
// - a target_modules regex with nested quantifiers held the event loop ~36 s (RegExp
//   backtracking), so every call of every client waited. Now the upload is answered at once,
//   and other calls made meanwhile answer within 100 ms, also during the costliest pattern the
//   matcher's syntax limits let through (refused by its work limit); unsupported syntax and
//   oversized patterns are INVALID_ARGUMENT.
// - an adapter with NaN or infinite weights was accepted and could be activated. Now UploadAdapter
//   and LoadAdapter refuse it with INVALID_ARGUMENT naming the tensor and the request field.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodePeftAdapter, writePeftAdapter } from "#core/formats/peft.ts";
import { MAX_MATCH_WORK, MAX_PATTERN_LENGTH } from "#core/formats/linear-regex.ts";
import { Status } from "#core/grpc/adapter.ts";
import type { LoraAdapter } from "#core/model/lora.ts";
import { statusOf } from "#test/inference/helpers.ts";
import { randomAdapter, startSecurityServers } from "./servers.ts";
import type { SecurityServers } from "./servers.ts";

let servers: SecurityServers;
beforeAll(async () => {
  servers = await startSecurityServers({ trainer: false });
});
afterAll(async () => {
  await servers?.close();
});

/** The adapter's two files, with adapter_config.json's target_modules replaced when given. */
function adapterFiles(adapter: LoraAdapter, targetModules?: unknown): { configJson: string; safetensors: Uint8Array } {
  const files = encodePeftAdapter(adapter);
  if (targetModules === undefined) return files;
  return { ...files, configJson: JSON.stringify({ ...JSON.parse(files.configJson), target_modules: targetModules }) };
}

async function upload({ configJson, safetensors }: { configJson: string; safetensors: Uint8Array }, activate = false) {
  const call = servers.typed.adapters.uploadAdapter({ timeoutMs: 60_000 });
  await call.write({ part: { case: "header", value: { adapterConfigJson: configJson, safetensorsSize: safetensors.length, activate } } });
  await call.write({ part: { case: "safetensorsChunk", value: safetensors } });
  return call.end();
}

/**
 * Runs `attack` and, from before it is sent until it is answered (and at least `minProbes`
 * times), GetModelInfo and ListAdapters one after the other; returns each probe's latency.
 */
async function latenciesDuring(attack: () => Promise<unknown>, minProbes = 6): Promise<number[]> {
  // Connections and code paths warm first, so a probe's latency is the server's answer time.
  await servers.typed.inference.getModelInfo({});
  await servers.typed.adapters.listAdapters({});
  const latencies: number[] = [];
  let answered = false;
  const probing = (async () => {
    while (!answered || latencies.length < minProbes) {
      const started = performance.now();
      if (latencies.length % 2 === 0) await servers.typed.inference.getModelInfo({}, { timeoutMs: 60_000 });
      else await servers.typed.adapters.listAdapters({}, { timeoutMs: 60_000 });
      latencies.push(performance.now() - started);
    }
  })();
  // The first probe is on the wire before the attack.
  await new Promise((resolve) => setImmediate(resolve));
  await attack().then(
    () => undefined,
    () => undefined,
  );
  answered = true;
  await probing;
  return latencies;
}

/**
 * Asserts that no probe during `attack` waited 100 ms, allowing up to three tries: a machine
 * shared with other work can stall any process for a moment, but an attack that blocks the
 * server makes every try slow (the RegExp version held each one for over a minute).
 */
async function expectProbesWithin100ms(attack: () => Promise<unknown>): Promise<void> {
  const tries: number[][] = [];
  for (let i = 0; i < 3; i++) {
    const latencies = await latenciesDuring(attack);
    tries.push(latencies);
    if (Math.max(...latencies) < 100) return;
  }
  expect.fail(`a probe took 100 ms or more in every try; latencies (ms): ${tries.map((t) => t.map((ms) => ms.toFixed(1)).join(", ")).join(" | ")}`);
}

describe("a target_modules regex cannot hold the server", () => {
  // PEFT's regex form: nested quantifiers that make a backtracking engine try every split.
  const EVIL = "mo([a-z._0-9]+)+X";

  it("the upload that froze the server for ~36 s is answered at once, and other calls meanwhile within 100 ms", async () => {
    const files = adapterFiles(randomAdapter(1), EVIL);
    let refusal: Awaited<ReturnType<typeof statusOf>> | undefined;
    await expectProbesWithin100ms(async () => {
      refusal = await statusOf(() => upload(files));
    });
    // A well-formed pattern that selects no module of this expert: the adapter does not fit it.
    expect(refusal!.code).toBe(Status.FAILED_PRECONDITION);
    expect(refusal!.field).toBe("header.adapter_config_json");
    expect(refusal!.message).toContain(`"target_modules" regex ${JSON.stringify(EVIL)} matches no linear module`);
  });

  it("LoadAdapter reads the same pattern from a directory just as quickly", async () => {
    writePeftAdapter(join(servers.adapterDir, "evil"), randomAdapter(2));
    const dir = join(servers.adapterDir, "evil");
    const configFile = join(dir, "adapter_config.json");
    writeFileSync(configFile, JSON.stringify({ ...JSON.parse(readFileSync(configFile, "utf8")), target_modules: EVIL }));
    let refusal: Awaited<ReturnType<typeof statusOf>> | undefined;
    await expectProbesWithin100ms(async () => {
      refusal = await statusOf(() => servers.typed.adapters.loadAdapter({ directory: dir }, { timeoutMs: 60_000 }));
    });
    expect([refusal!.code, refusal!.field]).toEqual([Status.FAILED_PRECONDITION, "directory"]);
  });

  it("the costliest pattern the matcher's limits allow is refused by its work limit; other calls still answer within 100 ms", async () => {
    // ~2,000 states all live at every character of the expert's 14 module paths.
    const files = adapterFiles(randomAdapter(3), "(?:.?){100}".repeat(10));
    let refusal: Awaited<ReturnType<typeof statusOf>> | undefined;
    await expectProbesWithin100ms(async () => {
      refusal = await statusOf(() => upload(files));
    });
    expect([refusal!.code, refusal!.field]).toEqual([Status.INVALID_ARGUMENT, "header.adapter_config_json"]);
    expect(refusal!.message).toContain(`matching the pattern takes more than ${MAX_MATCH_WORK} state visits`);
  });

  it.each([
    ["backreference", "(q)\\1_proj", "backreferences are not supported at position 3"],
    ["lookahead", "^(?!.*mlp).*_proj", "lookahead is not supported at position 1"],
    ["pattern over the size limit", "a".repeat(MAX_PATTERN_LENGTH + 1), `the pattern has ${MAX_PATTERN_LENGTH + 1} characters, above the limit of ${MAX_PATTERN_LENGTH}`],
  ])("a %s is INVALID_ARGUMENT, saying what is not accepted", async (_what, pattern, problem) => {
    const err = await statusOf(() => upload(adapterFiles(randomAdapter(4), pattern)));
    expect([err.code, err.field]).toEqual([Status.INVALID_ARGUMENT, "header.adapter_config_json"]);
    expect(err.message).toContain(`is not accepted: ${problem}`);
  });

  it("a pattern PEFT users write selects its modules, and the adapter loads", async () => {
    const adapter = (await upload(adapterFiles(randomAdapter(5), ".*\\.(q_proj|v_proj)"))).loaded?.adapter;
    expect(adapter?.targetModules).toEqual(["q_proj", "v_proj"]);
    await servers.typed.adapters.unloadAdapter({ version: adapter!.version });
  });
});

describe("non-finite adapter weights are refused", () => {
  const TENSOR = "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight";

  function poisoned(value: number): LoraAdapter {
    const adapter = randomAdapter(6);
    // lora_A of v_proj is [rank 2, hidden 64]: element [1, 5] is index 69.
    adapter.pairs.get("model.layers.1.self_attn.v_proj.weight")!.a.data[69] = value;
    return adapter;
  }

  it.each([
    [Number.NaN, "NaN"],
    [Number.POSITIVE_INFINITY, "Infinity"],
    [Number.NEGATIVE_INFINITY, "-Infinity"],
  ])("UploadAdapter with %s: INVALID_ARGUMENT naming the tensor and the chunk field; nothing loaded", async (value, shown) => {
    const err = await statusOf(() => upload(adapterFiles(poisoned(value)), true));
    expect([err.code, err.field]).toEqual([Status.INVALID_ARGUMENT, "safetensors_chunk"]);
    expect(err.message).toContain(`"${TENSOR}" holds a non-finite value (${shown}) at [1, 5]`);
    const listed = await servers.typed.adapters.listAdapters({});
    expect([listed.adapters.length, listed.activeVersion]).toEqual([0, ""]);
  });

  it("LoadAdapter of the same files from a directory: INVALID_ARGUMENT naming the tensor and the directory field", async () => {
    const dir = join(servers.adapterDir, "nan");
    writePeftAdapter(dir, poisoned(Number.NaN));
    const err = await statusOf(() => servers.typed.adapters.loadAdapter({ directory: dir, activate: true }));
    expect([err.code, err.field]).toEqual([Status.INVALID_ARGUMENT, "directory"]);
    expect(err.message).toContain(`"${TENSOR}" holds a non-finite value (NaN) at [1, 5]`);
    expect((await servers.typed.adapters.listAdapters({})).adapters).toEqual([]);
  });

  it("the same adapter with a finite value there is accepted (the refusal is about the value)", async () => {
    const adapter = (await upload(adapterFiles(poisoned(0.25)))).loaded?.adapter;
    expect(adapter?.version).toMatch(/^[0-9a-f]{16}$/);
    await servers.typed.adapters.unloadAdapter({ version: adapter!.version });
  });
});
