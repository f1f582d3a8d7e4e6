import * as tf from "@tensorflow/tfjs";
import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";
import { BackendUnavailableError, checkWeightsFitBackend, describeBackendChoice, measureMatmulGflops, selectBackend } from "./backend.ts";

const require = createRequire(import.meta.url);
const installed = (pkg: string) => {
  try {
    require.resolve(pkg);
    return true;
  } catch {
    return false;
  }
};
const nativeInstalled = installed("@tensorflow/tfjs-node-gpu") || installed("@tensorflow/tfjs-node");

describe("selectBackend", () => {
  it("takes the best backend that loads and says why better ones were skipped", async () => {
    const choice = await selectBackend({ env: {} });
    expect(tf.getBackend()).toBe(choice.tfjsName);
    expect(choice.forced).toBe(false);
    const order = ["node-gpu", "node", "wasm", "cpu"];
    expect(choice.skipped.map((s) => s.kind)).toEqual(order.slice(0, order.indexOf(choice.kind)));
    for (const s of choice.skipped) expect(s.reason.length).toBeGreaterThan(10);
    if (!installed("@tensorflow/tfjs-node-gpu")) {
      expect(choice.skipped[0]).toEqual({ kind: "node-gpu", reason: expect.stringMatching(/@tensorflow\/tfjs-node-gpu is not installed/) });
    }
    if (!nativeInstalled) {
      expect(choice.kind).toBe("wasm");
      expect(choice.skipped[1].reason).toMatch(/@tensorflow\/tfjs-node is not installed/);
    }
    expect(describeBackendChoice(choice)).toMatch(new RegExp(`^tfjs backend ${choice.kind} .*best available`));
  });

  it("honours LR_TFJS_BACKEND and the force option", async () => {
    const viaEnv = await selectBackend({ env: { LR_TFJS_BACKEND: "cpu" } });
    expect(viaEnv).toEqual({ kind: "cpu", tfjsName: "cpu", forced: true, skipped: [] });
    expect(tf.getBackend()).toBe("cpu");
    const viaOption = await selectBackend({ force: "wasm", env: { LR_TFJS_BACKEND: "cpu" } });
    expect(viaOption.kind).toBe("wasm");
    expect(tf.getBackend()).toBe("wasm");
    expect((await selectBackend({ env: { LR_TFJS_BACKEND: "auto" } })).forced).toBe(false);
  });

  it("fails clearly when the forced backend is missing or unknown", async () => {
    if (!installed("@tensorflow/tfjs-node-gpu")) {
      await expect(selectBackend({ force: "node-gpu" })).rejects.toThrow(BackendUnavailableError);
      await expect(selectBackend({ force: "node-gpu" })).rejects.toThrow(/"node-gpu" is unavailable: @tensorflow\/tfjs-node-gpu is not installed/);
    }
    await expect(selectBackend({ env: { LR_TFJS_BACKEND: "webgpu" } })).rejects.toThrow(/LR_TFJS_BACKEND must be one of auto, node-gpu, node, wasm, cpu/);
  });
});

describe("checkWeightsFitBackend", () => {
  it("refuses models the 32-bit wasm heap cannot hold, before tfjs fails obscurely", () => {
    const qwen05b = 494e6 * 4; // Qwen2.5-0.5B in float32: loads, but training exhausts the heap
    expect(() => checkWeightsFitBackend(qwen05b, "/models/qwen0.5b", "wasm")).toThrow(BackendUnavailableError);
    expect(() => checkWeightsFitBackend(qwen05b, "/models/qwen0.5b", "wasm")).toThrow(/\/models\/qwen0.5b needs 1.84 GiB .* allows 1.50 GiB/);
    expect(() => checkWeightsFitBackend(135e6 * 4, "/models/small", "wasm")).not.toThrow();
    expect(() => checkWeightsFitBackend(qwen05b, "/models/qwen0.5b", "tensorflow")).not.toThrow();
  });
});

describe("measureMatmulGflops", () => {
  it("measures a positive, finite throughput on the active backend", async () => {
    const choice = await selectBackend({ env: {} });
    const before = tf.memory().numTensors;
    const gflops = measureMatmulGflops({ size: 128, minMs: 100 });
    expect(Number.isFinite(gflops)).toBe(true);
    expect(gflops).toBeGreaterThan(0.05);
    expect(tf.memory().numTensors).toBe(before);
    console.log(`${describeBackendChoice(choice)}: matMul 128x128 ${gflops.toFixed(2)} GFLOP/s`);
  });
});
