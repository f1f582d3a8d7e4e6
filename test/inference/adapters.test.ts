// Hot LoRA adapters over a real socket: an uploaded adapter changes the expert's
// distributions exactly as the merged ONNX export does, steps and chunks say which version
// produced them, running streams keep the version they started on, rollback restores the
// base expert, and bad adapters or paths get the status codes the contract names.
import { mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Status } from "#core/grpc/adapter.ts";
import { GenerationMode } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { encodePeftAdapter, writePeftAdapter } from "#core/formats/peft.ts";
import { parseModelConfig } from "#core/model/config.ts";
import type { ModelConfig } from "#core/model/config.ts";
import type { LoraSettings } from "#core/model/lora.ts";
import { randomLoraAdapter } from "#core/model/lora.ts";
import type { InferenceServer } from "#inference/main.ts";
import { exportOnnx } from "#inference/model/export.ts";
import { CausalLmSession } from "#inference/model/session.ts";
import { AMATEUR_CONFIG, EXPERT_CONFIG, FULL32, byRequest, clients, collect, fullForward, fullOf, idsPrompt, maxAbsDiff, metric, openDirect, scrape, startServer, statusOf, uploadAdapter, writeTinyPair } from "./helpers.ts";
import type { TinyPair } from "./helpers.ts";

const TOLERANCE = 1e-4;
const MAX_ADAPTER_BYTES = 256 * 1024;

let pair: TinyPair;
let server: InferenceServer;
let client: ReturnType<typeof clients>;
let allowedDir: string;
let expertBase: CausalLmSession;
let expertMerged: CausalLmSession;
let amateurDirect: CausalLmSession;
const expertConfig = parseModelConfig(EXPERT_CONFIG);
const SETTINGS: LoraSettings = { rank: 4, alpha: 8, dropout: 0, targetModules: ["q_proj", "v_proj"] };

const randomAdapter = (config: ModelConfig, seed: number) => randomLoraAdapter(config, seed, SETTINGS);
const adapter = randomAdapter(expertConfig, 5);
const files = encodePeftAdapter(adapter, { baseModel: "tiny-expert" });
const PROMPT = [2, 77, 350, 113, 116, 37, 124, 361];

beforeAll(async () => {
  pair = writeTinyPair();
  allowedDir = join(pair.root, "adapters");
  writePeftAdapter(join(allowedDir, "first"), adapter, { baseModel: "tiny-expert" });
  // The reference: the project's own offline export with the adapter merged, opened on its own.
  const merged = await exportOnnx({ modelDir: pair.expertDir, adapterDir: join(allowedDir, "first"), outPath: join(pair.root, "merged", "model.onnx") });
  expertMerged = await CausalLmSession.open(merged.onnxPath, { executionProvider: "cpu", threads: 1 });
  expertBase = await openDirect(pair.expertDir);
  amateurDirect = await openDirect(pair.amateurDir);
  server = await startServer(pair, { adapterDirs: [allowedDir], limits: { maxAdapterBytes: MAX_ADAPTER_BYTES } });
  client = clients(server);
});

afterAll(async () => {
  client?.close();
  await server?.close(1000);
  await Promise.all([expertMerged?.release(), expertBase?.release(), amateurDirect?.release()]);
  pair?.remove();
});

const upload = (configJson: string, safetensors: Uint8Array, activate: boolean, declared = safetensors.length) => uploadAdapter(client, { configJson, safetensors }, activate, declared);

async function scoreExpert(ids: number[]): Promise<{ version: string; expert: Float32Array[]; amateur: Float32Array[] }> {
  const messages = await collect(client.inference.score({ prompt: idsPrompt(ids), distributions: FULL32 }));
  const started = messages[0].event.value as { adapterVersion: string };
  const rows = messages.slice(1).map((m) => fullOf(m.event.value as never));
  return { version: started.adapterVersion, expert: rows.map((r) => r.expert), amateur: rows.map((r) => r.amateur) };
}

describe("an uploaded adapter", () => {
  let version: string;

  beforeAll(async () => {
    const response = await upload(files.configJson, files.safetensors, true);
    version = response.loaded!.adapter!.version;
    expect(response.loaded!.alreadyLoaded).toBe(false);
  });

  it("is described, versioned by content and active", async () => {
    expect(version).toMatch(/^[0-9a-f]{16}$/);
    const list = await client.adapters.listAdapters({});
    expect(list.activeVersion).toBe(version);
    expect(list.adapters).toHaveLength(1);
    expect(list.adapters[0]).toMatchObject({ version, rank: 4, loraAlpha: 8, targetModules: ["q_proj", "v_proj"], baseModelNameOrPath: "tiny-expert", sizeBytes: files.safetensors.length, source: "upload", active: true });
    expect((await client.inference.getModelInfo({})).adapterVersion).toBe(version);
    expect(metric(await scrape(server), "lightreasoner_inference_adapter_version", { version })).toBe(1);
  });

  it("changes the expert's distributions exactly as the merged export does, and leaves the amateur alone", async () => {
    const call = client.inference.streamTrajectories();
    await call.write({ requestId: "t", action: { case: "start", value: { prompt: idsPrompt(PROMPT), sampling: { temperature: 1, seed: 4, maxNewTokens: 10 }, distributions: FULL32 } } });
    call.end();
    const t = byRequest(await collect(call)).get("t")!;
    expect(t.adapterVersion).toBe(version);
    const ids = [...t.promptIds, ...t.steps.map((s) => s.scored.tokenId)];
    const [merged, base, amateur] = await Promise.all([fullForward(expertMerged, ids), fullForward(expertBase, ids), fullForward(amateurDirect, ids)]);
    for (const step of t.steps) {
      expect(step.adapterVersion).toBe(version);
      const streamed = fullOf(step.scored);
      expect(maxAbsDiff(streamed.expert, merged[step.scored.position - 1])).toBeLessThan(TOLERANCE);
      expect(maxAbsDiff(streamed.amateur, amateur[step.scored.position - 1])).toBeLessThan(TOLERANCE);
      // The adapter really moved the expert.
      expect(maxAbsDiff(streamed.expert, base[step.scored.position - 1])).toBeGreaterThan(1e-2);
    }
  });

  it("serves Score and Generate with it too", async () => {
    const scored = await scoreExpert(PROMPT);
    expect(scored.version).toBe(version);
    const merged = await fullForward(expertMerged, PROMPT);
    scored.expert.forEach((row, k) => expect(maxAbsDiff(row, merged[k])).toBeLessThan(TOLERANCE));
    const messages = await collect(client.inference.generate({ prompt: idsPrompt(PROMPT), sampling: { maxNewTokens: 4 }, mode: GenerationMode.EXPERT }));
    const chunks = messages.filter((m) => m.event.case === "chunk").map((m) => m.event.value as { adapterVersion: string });
    expect(chunks.length).toBeGreaterThan(0);
    expect(chunks.every((c) => c.adapterVersion === version)).toBe(true);
  });

  it("gets the same version however it is supplied: again by upload, or from an allowed directory", async () => {
    const again = await upload(files.configJson, files.safetensors, false);
    expect([again.loaded!.adapter!.version, again.loaded!.alreadyLoaded]).toEqual([version, true]);
    const fromDir = await client.adapters.loadAdapter({ directory: join(allowedDir, "first") });
    expect([fromDir.loaded!.adapter!.version, fromDir.loaded!.alreadyLoaded]).toEqual([version, true]);
    // Reformatted JSON, same settings and tensors: same version.
    const compact = JSON.stringify(JSON.parse(files.configJson));
    expect((await upload(compact, files.safetensors, false)).loaded!.adapter!.version).toBe(version);
  });

  it("running trajectories keep the version they started on; rollback restores the base expert's logits", async () => {
    const call = client.inference.streamTrajectories();
    const start = (requestId: string) => call.write({ requestId, action: { case: "start", value: { prompt: idsPrompt(PROMPT), sampling: { temperature: 0, maxNewTokens: 30 }, distributions: FULL32 } } });
    await start("before");
    const iterator = call[Symbol.asyncIterator]();
    const seen = [];
    // Wait until "before" was admitted on the adapter, then switch new requests to the base expert.
    for (;;) {
      const { value } = await iterator.next();
      seen.push(value);
      if (value.requestId === "before" && value.event.case === "started") break;
    }
    const rolled = await client.adapters.rollbackToBase({});
    expect(rolled.previousVersion).toBe(version);
    await start("after");
    call.end();
    for (;;) {
      const { value, done } = await iterator.next();
      if (done) break;
      seen.push(value);
    }
    const byId = byRequest(seen);
    const before = byId.get("before")!;
    const after = byId.get("after")!;
    expect(before.adapterVersion).toBe(version);
    expect(before.steps.every((s) => s.adapterVersion === version)).toBe(true);
    expect(after.adapterVersion).toBe("");
    expect(after.steps.every((s) => s.adapterVersion === "")).toBe(true);
    const ids = [...PROMPT, ...after.steps.map((s) => s.scored.tokenId)];
    const base = await fullForward(expertBase, ids);
    for (const step of after.steps) expect(maxAbsDiff(fullOf(step.scored).expert, base[step.scored.position - 1])).toBeLessThan(TOLERANCE);
    const mergedIds = [...PROMPT, ...before.steps.map((s) => s.scored.tokenId)];
    const merged = await fullForward(expertMerged, mergedIds);
    for (const step of before.steps) expect(maxAbsDiff(fullOf(step.scored).expert, merged[step.scored.position - 1])).toBeLessThan(TOLERANCE);

    const scored = await scoreExpert(PROMPT);
    expect(scored.version).toBe("");
    const baseRows = await fullForward(expertBase, PROMPT);
    scored.expert.forEach((row, k) => expect(maxAbsDiff(row, baseRows[k])).toBeLessThan(TOLERANCE));
    expect((await client.inference.getModelInfo({})).adapterVersion).toBe("");
    expect(metric(await scrape(server), "lightreasoner_inference_adapter_version", { version: "base" })).toBe(1);
  });

  it("activates, refuses to unload while active, unloads when not", async () => {
    const activated = await client.adapters.activateAdapter({ version });
    expect(activated).toMatchObject({ previousVersion: "", activeVersion: version });
    const busy = await statusOf(() => client.adapters.unloadAdapter({ version }));
    expect([busy.code, busy.field]).toEqual([Status.FAILED_PRECONDITION, "version"]);
    await client.adapters.rollbackToBase({});
    await client.adapters.unloadAdapter({ version });
    expect((await client.adapters.listAdapters({})).adapters).toEqual([]);
    const gone = await statusOf(() => client.adapters.activateAdapter({ version }));
    expect([gone.code, gone.field]).toEqual([Status.NOT_FOUND, "version"]);
    const empty = await statusOf(() => client.adapters.activateAdapter({ version: "" }));
    expect([empty.code, empty.field]).toEqual([Status.INVALID_ARGUMENT, "version"]);
  });
});

describe("bad adapters and paths", () => {
  it("a path outside the allowed directories is PERMISSION_DENIED, also through a link", async () => {
    const outside = await statusOf(() => client.adapters.loadAdapter({ directory: pair.expertDir }));
    expect([outside.code, outside.field]).toEqual([Status.PERMISSION_DENIED, "directory"]);
    // A well-formed adapter outside, reached through a link placed inside.
    writePeftAdapter(join(pair.root, "outside"), adapter);
    const sneaky = join(allowedDir, "link-out");
    symlinkSync(join(pair.root, "outside"), sneaky);
    const viaLink = await statusOf(() => client.adapters.loadAdapter({ directory: sneaky }));
    expect(viaLink.code).toBe(Status.PERMISSION_DENIED);
    const dotdot = await statusOf(() => client.adapters.loadAdapter({ directory: join(allowedDir, "..", "expert") }));
    expect(dotdot.code).toBe(Status.PERMISSION_DENIED);
  });

  it("a missing directory is NOT_FOUND, a relative one INVALID_ARGUMENT", async () => {
    const missing = await statusOf(() => client.adapters.loadAdapter({ directory: join(allowedDir, "nope") }));
    expect([missing.code, missing.field]).toEqual([Status.NOT_FOUND, "directory"]);
    const relative = await statusOf(() => client.adapters.loadAdapter({ directory: "adapters/first" }));
    expect([relative.code, relative.field]).toEqual([Status.INVALID_ARGUMENT, "directory"]);
  });

  it("malformed uploads are INVALID_ARGUMENT naming the part", async () => {
    const badJson = await statusOf(() => upload("{ not json", files.safetensors, false));
    expect([badJson.code, badJson.field]).toEqual([Status.INVALID_ARGUMENT, "header.adapter_config_json"]);
    const badRank = await statusOf(() => upload(files.configJson.replace('"r": 4', '"r": -1'), files.safetensors, false));
    expect([badRank.code, badRank.field]).toEqual([Status.INVALID_ARGUMENT, "header.adapter_config_json"]);
    expect(badRank.message).toContain('"r" must be a positive integer');
    const garbage = await statusOf(() => upload(files.configJson, new Uint8Array(64).fill(7), false));
    expect([garbage.code, garbage.field]).toEqual([Status.INVALID_ARGUMENT, "safetensors_chunk"]);
    const short = await statusOf(() => upload(files.configJson, files.safetensors, false, files.safetensors.length + 10));
    expect([short.code, short.field]).toEqual([Status.INVALID_ARGUMENT, "header.safetensors_size"]);
    const noHeader = await statusOf(async () => {
      const call = client.adapters.uploadAdapter();
      await call.write({ part: { case: "safetensorsChunk", value: files.safetensors.subarray(0, 10) } });
      return call.end();
    });
    expect([noHeader.code, noHeader.field]).toEqual([Status.INVALID_ARGUMENT, "header"]);
  });

  it("adapters that do not fit the expert are FAILED_PRECONDITION with the difference named", async () => {
    // Built for the amateur's shapes (hidden 32, not 64).
    const wrongShapes = encodePeftAdapter(randomAdapter(parseModelConfig(AMATEUR_CONFIG), 1));
    const shapes = await statusOf(() => upload(wrongShapes.configJson, wrongShapes.safetensors, false));
    expect([shapes.code, shapes.field]).toEqual([Status.FAILED_PRECONDITION, "safetensors_chunk"]);
    expect(shapes.message).toMatch(/input features|output features/);
    // For a deeper model: layer 2 does not exist here.
    const deeper = encodePeftAdapter(randomAdapter(parseModelConfig({ ...EXPERT_CONFIG, num_hidden_layers: 3 }), 2));
    const layers = await statusOf(() => upload(deeper.configJson, deeper.safetensors, false));
    expect(layers.code).toBe(Status.FAILED_PRECONDITION);
    expect(layers.message).toContain("layer index 2 is out of range");
    const unknownModule = await statusOf(() => upload(files.configJson.replace('"v_proj"', '"w_proj"'), files.safetensors, false));
    expect([unknownModule.code, unknownModule.field]).toEqual([Status.FAILED_PRECONDITION, "header.adapter_config_json"]);
  });

  it("an adapter above the size limit is RESOURCE_EXHAUSTED before its bytes are read", async () => {
    const big = await statusOf(() => upload(files.configJson, new Uint8Array(0), false, MAX_ADAPTER_BYTES + 1));
    expect([big.code, big.field]).toEqual([Status.RESOURCE_EXHAUSTED, "header.safetensors_size"]);
    const bigDir = join(allowedDir, "big");
    mkdirSync(bigDir, { recursive: true });
    writeFileSync(join(bigDir, "adapter_config.json"), files.configJson);
    writeFileSync(join(bigDir, "adapter_model.safetensors"), new Uint8Array(MAX_ADAPTER_BYTES + 1));
    const fromDir = await statusOf(() => client.adapters.loadAdapter({ directory: bigDir }));
    expect(fromDir.code).toBe(Status.RESOURCE_EXHAUSTED);
  });

  it("after all of that the server still serves", async () => {
    const info = await client.inference.getModelInfo({});
    expect(info.vocabSize).toBe(384);
    const out = await collect(client.inference.generate({ prompt: idsPrompt(PROMPT), sampling: { maxNewTokens: 3 }, mode: GenerationMode.EXPERT }));
    expect(out.at(-1)!.event.case).toBe("finished");
  });
});
