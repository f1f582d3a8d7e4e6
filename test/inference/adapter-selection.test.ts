// Per-request adapters over a real socket on the built-in pair: Generate, Score and each
// trajectory run the adapter they name, the base expert, or the active adapter; one batch
// mixes them (the batch_adapter_versions histogram proves a forward pass held three) and
// every sequence gets what it gets alone. Bad selections get NOT_FOUND / INVALID_ARGUMENT;
// the resident bound evicts least recently used adapters or refuses with RESOURCE_EXHAUSTED,
// and /metrics reports requests and tokens per version, residency and evictions.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Status } from "#core/grpc/adapter.ts";
import { encodePeftAdapter } from "#core/formats/peft.ts";
import type { AdapterSelection } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { FinishReason } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { GenerationMode } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { loadModelDir } from "#core/formats/model-dir.ts";
import type { LoraSettings } from "#core/model/lora.ts";
import { randomLoraAdapter } from "#core/model/lora.ts";
import type { InferenceServer } from "#inference/main.ts";
import type { Trajectory } from "./helpers.ts";
import { FULL32, byRequest, clients, collect, fullOf, idsPrompt, maxAbsDiff, metric, scrape, startServer, statusOf, uploadAdapter } from "./helpers.ts";
import type { Sample } from "./helpers.ts";

const BUILT_IN = { expertDir: "models/expert", amateurDir: "models/amateur" };
const TOLERANCE = 1e-4;
const config = loadModelDir(BUILT_IN.expertDir).config;
const QV: LoraSettings = { rank: 4, alpha: 8, dropout: 0, targetModules: ["q_proj", "v_proj"] };
const MLP: LoraSettings = { rank: 2, alpha: 4, dropout: 0, targetModules: ["k_proj", "o_proj", "gate_proj", "down_proj"] };
/** Hand-computed for the built-in expert (hidden 64, q 4x16, v 2x16, 2 layers): QV's factors in bytes. */
const QV_BYTES = 2 * (64 * 4 + 4 * 64 + 64 * 4 + 4 * 32) * 4;
// <|bos|> <|user|> Tom + 4 = ? <|assistant|>
const PROMPT = [1, 5, 28, 23, 14, 27, 21, 6];

const BASE: AdapterSelection = { $typeName: "lightreasoner.v1.AdapterSelection", choice: { case: "base", value: { $typeName: "lightreasoner.v1.BaseExpert" } } };
const version = (v: string): AdapterSelection => ({ $typeName: "lightreasoner.v1.AdapterSelection", choice: { case: "version", value: v } });

/** Expert forward passes that held at least three adapter versions, from the histogram. */
function mixedBatches(samples: Sample[]): number {
  const name = "lightreasoner_inference_batch_adapter_versions";
  return metric(samples, `${name}_count`) - metric(samples, `${name}_bucket`, { le: "2" });
}

let server: InferenceServer;
let client: ReturnType<typeof clients>;
let first: string;
let second: string;

beforeAll(async () => {
  server = await startServer(BUILT_IN);
  client = clients(server);
  first = (await uploadAdapter(client, encodePeftAdapter(randomLoraAdapter(config, 1, QV)), true)).loaded!.adapter!.version;
  second = (await uploadAdapter(client, encodePeftAdapter(randomLoraAdapter(config, 2, MLP)), false)).loaded!.adapter!.version;
});

afterAll(async () => {
  client?.close();
  await server?.close(1000);
});

/**
 * One StreamTrajectories call starting every trajectory in one burst of writes, read to the
 * end. The scheduler admits the first at once when idle and the rest together at its next
 * step, so a list that ends with three different selections has them in one prefill batch.
 */
async function trajectories(starts: { id: string; adapter?: AdapterSelection }[]): Promise<Map<string, Trajectory>> {
  const call = client.inference.streamTrajectories();
  const written = starts.map(({ id, adapter }) =>
    call.write({ requestId: id, action: { case: "start", value: { prompt: idsPrompt(PROMPT), sampling: { temperature: 1, seed: 7, maxNewTokens: 16 }, distributions: FULL32, adapter } } }),
  );
  await Promise.all(written);
  call.end();
  return byRequest(await collect(call));
}

async function score(ids: number[], adapter?: AdapterSelection) {
  const messages = await collect(client.inference.score({ prompt: idsPrompt(ids), distributions: FULL32, adapter }));
  const started = messages[0].event.value as { adapterVersion: string };
  const positions = new Map(messages.slice(1).map((m) => [(m.event.value as { position: number }).position, fullOf(m.event.value as never)]));
  return { version: started.adapterVersion, positions };
}

async function generate(adapter: AdapterSelection | undefined) {
  const messages = await collect(client.inference.generate({ prompt: idsPrompt(PROMPT), sampling: { temperature: 0, maxNewTokens: 48 }, mode: GenerationMode.EXPERT, adapter }));
  const chunks = messages.filter((m) => m.event.case === "chunk").map((m) => m.event.value as { tokenIds: number[]; adapterVersion: string });
  return { tokenIds: chunks.flatMap((c) => c.tokenIds), versions: new Set(chunks.map((c) => c.adapterVersion)) };
}

describe("one batch mixing the base expert and two adapters", () => {
  it("StreamTrajectories: each trajectory equals itself alone and Score of its sequence, to 1e-4", async () => {
    const starts = [
      { id: "active", adapter: undefined, expected: first },
      { id: "first", adapter: version(first), expected: first },
      { id: "second", adapter: version(second), expected: second },
      { id: "base", adapter: BASE, expected: "" },
    ];
    const before = mixedBatches(await scrape(server));
    const mixed = await trajectories(starts);
    expect(mixedBatches(await scrape(server)) - before).toBeGreaterThan(0);
    for (const { id, adapter, expected } of starts) {
      const t = mixed.get(id)!;
      expect(t.finished.error).toBeUndefined();
      expect(t.adapterVersion).toBe(expected);
      expect(t.steps.every((s) => s.adapterVersion === expected)).toBe(true);
      const alone = (await trajectories([{ id, adapter }])).get(id)!;
      expect(alone.steps.map((s) => s.scored.tokenId)).toEqual(t.steps.map((s) => s.scored.tokenId));
      const scored = await score([...t.promptIds, ...t.steps.map((s) => s.scored.tokenId)], adapter);
      expect(scored.version).toBe(expected);
      t.steps.forEach((step, i) => {
        const got = fullOf(step.scored);
        const single = fullOf(alone.steps[i].scored);
        expect(maxAbsDiff(got.expert, single.expert)).toBeLessThan(TOLERANCE);
        expect(maxAbsDiff(got.amateur, single.amateur)).toBeLessThan(TOLERANCE);
        expect(maxAbsDiff(got.expert, scored.positions.get(step.scored.position)!.expert)).toBeLessThan(TOLERANCE);
      });
    }
    // The rows really ran different weights: the same prompt's first distribution differs by selection.
    const firstStep = (id: string) => fullOf(mixed.get(id)!.steps[0].scored).expert;
    expect(maxAbsDiff(firstStep("base"), firstStep("first"))).toBeGreaterThan(1e-2);
    expect(maxAbsDiff(firstStep("first"), firstStep("second"))).toBeGreaterThan(1e-2);
    expect(maxAbsDiff(firstStep("base"), firstStep("second"))).toBeGreaterThan(1e-2);
    expect(maxAbsDiff(firstStep("active"), firstStep("first"))).toBeLessThan(TOLERANCE);
  });

  it("Generate: concurrent greedy calls on base, first and second give token for token what each gives alone", async () => {
    const selections = [BASE, version(first), version(second)];
    const before = mixedBatches(await scrape(server));
    const together = await Promise.all(selections.map(generate));
    expect(mixedBatches(await scrape(server)) - before).toBeGreaterThan(0);
    const alone: Awaited<ReturnType<typeof generate>>[] = [];
    for (const selection of selections) alone.push(await generate(selection));
    together.forEach((t, i) => {
      expect(t.tokenIds.length).toBeGreaterThan(0);
      expect(t.tokenIds).toEqual(alone[i].tokenIds);
      expect([...t.versions]).toEqual([["", first, second][i]]);
    });
    expect(new Set(together.map((t) => t.tokenIds.join())).size).toBe(3);
  });
});

describe("selection errors", () => {
  const unknown = "0123456789abcdef";

  it("an unknown version is NOT_FOUND naming it, an empty one INVALID_ARGUMENT, on Generate and Score", async () => {
    for (const call of [() => generate(version(unknown)), () => score(PROMPT, version(unknown))]) {
      const err = await statusOf(call);
      expect(err.code).toBe(Status.NOT_FOUND);
      expect(err.message).toContain(`adapter.version: adapter "${unknown}" is not loaded`);
      expect(err.message).toContain(first);
    }
    for (const call of [() => generate(version("")), () => score(PROMPT, version(""))]) {
      const err = await statusOf(call);
      expect(err.code).toBe(Status.INVALID_ARGUMENT);
      expect(err.message).toMatch(/^adapter\.version: must name a loaded adapter version/);
    }
  });

  it("a trajectory naming an unknown version finishes with NOT_FOUND; the call's other trajectory runs", async () => {
    const out = await trajectories([{ id: "lost", adapter: version(unknown) }, { id: "fine", adapter: version(second) }]);
    const lost = out.get("lost")!;
    expect(lost.finished.end?.finishReason).toBe(FinishReason.ERROR);
    expect(lost.finished.error).toMatchObject({ code: Status.NOT_FOUND, field: "adapter.version" });
    expect(out.get("fine")!.steps.length).toBeGreaterThan(0);
    expect(out.get("fine")!.finished.error).toBeUndefined();
  });

  it("AMATEUR mode ignores the selection (the expert does not run)", async () => {
    const messages = await collect(client.inference.generate({ prompt: idsPrompt(PROMPT), sampling: { maxNewTokens: 4 }, mode: GenerationMode.AMATEUR, adapter: version(unknown) }));
    expect(messages.at(-1)!.event.case).toBe("finished");
  });
});

describe("residency under --max-resident-adapter-bytes", () => {
  let bounded: InferenceServer;
  let c: ReturnType<typeof clients>;
  const upload = async (seed: number, settings = QV, activate = false) => (await uploadAdapter(c, encodePeftAdapter(randomLoraAdapter(config, seed, settings)), activate)).loaded!.adapter!.version;
  const listed = async () => (await c.adapters.listAdapters({})).adapters.map((a) => a.version);

  beforeAll(async () => {
    bounded = await startServer(BUILT_IN, { limits: { maxResidentAdapterBytes: 2 * QV_BYTES } });
    c = clients(bounded);
  });
  afterAll(async () => {
    c?.close();
    await bounded?.close(1000);
  });

  it("states the bound in GetModelInfo and evicts the least recently used adapter; the evicted one is unloaded and its series go", async () => {
    expect((await c.inference.getModelInfo({})).limits!.maxResidentAdapterBytes).toBe(BigInt(2 * QV_BYTES));
    const a = await upload(11);
    const b = await upload(12);
    // A request on b, then one on a: b becomes the least recently used.
    for (const v of [b, a]) await collect(c.inference.score({ prompt: idsPrompt(PROMPT), distributions: FULL32, adapter: version(v) }));
    let samples = await scrape(bounded);
    expect(metric(samples, "lightreasoner_inference_adapter_requests_total", { version: b })).toBe(1);
    expect(metric(samples, "lightreasoner_inference_resident_adapters")).toBe(2);
    expect(metric(samples, "lightreasoner_inference_resident_adapter_bytes")).toBe(2 * QV_BYTES);
    const d = await upload(13);
    expect(await listed()).toEqual([a, d]);
    const err = await statusOf(() => collect(c.inference.score({ prompt: idsPrompt(PROMPT), distributions: FULL32, adapter: version(b) })));
    expect(err.code).toBe(Status.NOT_FOUND);
    samples = await scrape(bounded);
    expect(metric(samples, "lightreasoner_inference_adapter_evictions_total")).toBe(1);
    expect(samples.some((s) => s.labels.version === b)).toBe(false);
    expect(metric(samples, "lightreasoner_inference_adapter_requests_total", { version: a })).toBe(1);
    expect(metric(samples, "lightreasoner_inference_resident_adapter_bytes")).toBe(2 * QV_BYTES);
  });

  it("a load that cannot fit is RESOURCE_EXHAUSTED stating the bound and what is held, and evicts nothing", async () => {
    const kept = await listed();
    // Rank 16: four times the bytes of the rank-4 adapters, more than the whole bound.
    const tooBig = await statusOf(() => upload(14, { ...QV, rank: 16, alpha: 32 }));
    expect(tooBig.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(tooBig.message).toContain(`needs ${4 * QV_BYTES} bytes`);
    expect(tooBig.message).toContain(`resident adapter bound is ${2 * QV_BYTES} bytes`);
    // Rank 8 fits the bound only if the active adapter went, which it cannot.
    await c.adapters.activateAdapter({ version: kept[0] });
    const pinned = await statusOf(() => upload(15, { ...QV, rank: 8, alpha: 16 }));
    expect(pinned.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(pinned.message).toContain(`${kept[0]} (${QV_BYTES} bytes, active)`);
    expect(await listed()).toEqual(kept);
    expect(metric(await scrape(bounded), "lightreasoner_inference_adapter_evictions_total")).toBe(1);
  });
});

describe("metrics per adapter version", () => {
  it("counts requests and generated tokens under each version label, base included", async () => {
    const samples = await scrape(server);
    for (const label of ["base", first, second]) {
      expect(metric(samples, "lightreasoner_inference_adapter_requests_total", { version: label })).toBeGreaterThan(0);
      expect(metric(samples, "lightreasoner_inference_adapter_tokens_total", { version: label })).toBeGreaterThan(0);
    }
    expect(metric(samples, "lightreasoner_inference_resident_adapters")).toBe(2);
  });
});
