// The adapter registry's residency rule on the built-in expert, without a server: which
// adapter a load evicts under the byte bound (least recently used, never the active one,
// never one a request holds), when it refuses instead, and that a lease keeps an unloaded
// adapter's factors (and its bytes on the books) until the lease ends.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodePeftAdapter } from "#core/formats/peft.ts";
import type { LoraSettings } from "#core/model/lora.ts";
import { randomLoraAdapter } from "#core/model/lora.ts";
import { CapacityError, NotFoundError } from "./errors.ts";
import type { AdapterRegistryObserver } from "./adapter-registry.ts";
import { AdapterRegistry } from "./adapter-registry.ts";
import { openServedModel } from "./served-model.ts";
import type { ServedModel } from "./served-model.ts";

const SETTINGS: LoraSettings = { rank: 4, alpha: 8, dropout: 0, targetModules: ["q_proj", "v_proj"] };
/**
 * The built-in expert: hidden 64, 4 heads and 2 KV heads of 16, 2 layers. Per layer, q_proj
 * holds A^T [64, 4] and B^T [4, 64], v_proj A^T [64, 4] and B^T [4, 32]: 896 floats.
 */
const ADAPTER_BYTES = 2 * (64 * 4 + 4 * 64 + 64 * 4 + 4 * 32) * 4;
const FIELDS = { config: "config", weights: "weights" };

let expert: ServedModel;
beforeAll(async () => {
  expert = await openServedModel("expert", "models/expert", { executionProvider: "cpu", threads: 1 });
});
afterAll(() => expert?.session.release());

const files = (seed: number) => encodePeftAdapter(randomLoraAdapter(expert.config!, seed, SETTINGS));

function registry(maxResidentBytes: number) {
  const events: string[] = [];
  const observer: AdapterRegistryObserver = {
    evicted: (version) => events.push(`evicted ${version}`),
    retired: (version) => events.push(`retired ${version}`),
  };
  const adapters = new AdapterRegistry(expert, { maxResidentBytes, observer });
  const load = async (seed: number, activate = false) => (await adapters.load(files(seed).configJson, files(seed).safetensors, { source: "test", activate, fields: FIELDS })).info.version;
  const loaded = () => adapters.list().map((a) => a.version);
  return { adapters, load, loaded, events };
}

describe("residency under the byte bound", () => {
  it("counts an adapter's factors as hand-computed", async () => {
    const { adapters, load } = registry(ADAPTER_BYTES);
    await load(1);
    expect(adapters.residentBytes).toBe(ADAPTER_BYTES);
    expect(adapters.list()[0].residentBytes).toBe(ADAPTER_BYTES);
  });

  it("evicts the least recently used adapter that is neither active nor leased, and only as many as needed", async () => {
    const { adapters, load, loaded, events } = registry(3 * ADAPTER_BYTES);
    const [a, b, c] = [await load(1), await load(2), await load(3)];
    // Using a makes b the least recently used.
    adapters.lease({ kind: "version", version: a }).release();
    const d = await load(4);
    expect(loaded()).toEqual([a, c, d]);
    expect(events).toEqual([`evicted ${b}`, `retired ${b}`]);
    expect(() => adapters.lease({ kind: "version", version: b })).toThrow(NotFoundError);
    // Activating c protects it although it is now the oldest; a goes.
    await adapters.activate(c);
    await load(2);
    expect(loaded()).toEqual([c, d, b]);
    expect(adapters.residentBytes).toBe(3 * ADAPTER_BYTES);
  });

  it("never evicts an adapter a request holds, even the least recently used one", async () => {
    const { adapters, load, loaded } = registry(2 * ADAPTER_BYTES);
    const [a, b] = [await load(1), await load(2)];
    const held = adapters.lease({ kind: "version", version: a });
    adapters.lease({ kind: "version", version: b }).release();
    const c = await load(3);
    expect(loaded()).toEqual([a, c]);
    expect(held.version).toBe(a);
    held.release();
    // Released, a is the least recently used again.
    adapters.lease({ kind: "version", version: c }).release();
    await load(4);
    expect(loaded()).toEqual([c, expect.any(String)]);
  });

  it("refuses a load it cannot make room for, stating the bound and what is held, and evicts nothing", async () => {
    const { adapters, load, loaded, events } = registry(2 * ADAPTER_BYTES);
    const a = await load(1, true);
    const b = await load(2);
    const held = adapters.lease({ kind: "version", version: b });
    const err = await load(3).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CapacityError);
    expect((err as CapacityError).field).toBe("weights");
    const message = (err as Error).message;
    expect(message).toContain(`needs ${ADAPTER_BYTES} bytes`);
    expect(message).toContain(`bound is ${2 * ADAPTER_BYTES} bytes`);
    expect(message).toContain(`${a} (${ADAPTER_BYTES} bytes, active)`);
    expect(message).toContain(`${b} (${ADAPTER_BYTES} bytes, leased by 1 running request(s))`);
    expect(loaded()).toEqual([a, b]);
    expect(events).toEqual([]);
    held.release();
    // Now b can go.
    await load(3);
    expect(loaded()).toEqual([a, expect.any(String)]);
    expect(events).toEqual([`evicted ${b}`, `retired ${b}`]);
  });

  it("an unloaded adapter keeps its factors and its bytes on the books until its last lease ends", async () => {
    const { adapters, load, loaded, events } = registry(2 * ADAPTER_BYTES);
    const a = await load(1);
    const held = adapters.lease({ kind: "version", version: a });
    adapters.unload(a);
    expect(loaded()).toEqual([]);
    expect(held.adapter).not.toBeNull();
    expect(adapters.residentBytes).toBe(ADAPTER_BYTES);
    expect(events).toEqual([]);
    // Room for one more only: a's bytes still count, and the active one cannot go.
    await load(2, true);
    await expect(load(3)).rejects.toThrow(/unloaded, still used by 1 request/);
    held.release();
    expect(events).toEqual([`retired ${a}`]);
    expect(adapters.residentBytes).toBe(ADAPTER_BYTES);
  });

  it("the base expert and the active adapter lease without a version; an unknown version is NOT_FOUND naming the field", async () => {
    const { adapters, load } = registry(ADAPTER_BYTES);
    const a = await load(1, true);
    expect(adapters.lease().version).toBe(a);
    const base = adapters.lease({ kind: "base" });
    expect(base.version).toBe("");
    expect(base.adapter).toBeNull();
    const err = (() => {
      try {
        adapters.lease({ kind: "version", version: "0123456789abcdef" });
      } catch (e) {
        return e as NotFoundError;
      }
    })();
    expect(err).toBeInstanceOf(NotFoundError);
    expect(err!.field).toBe("adapter.version");
    expect(err!.message).toContain('"0123456789abcdef" is not loaded');
  });
});
