// A session on its own thread: the caller's event loop keeps running while a step runs, lent
// buffers come back whole (resizable ones still resizable), other feeds are left untouched,
// and a failed run still gives back what it was lent.
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GraphBuilder } from "#core/formats/onnx-builder.ts";
import { encodeInline } from "#core/formats/onnx-file.ts";
import { SessionRunError, SessionThread } from "./session-thread.ts";

const N = 384;
/** y = x W^20 over [N, N]: about 2.3 GFLOP, tens of milliseconds on a CPU. */
function chainGraph(): Uint8Array {
  const g = new GraphBuilder();
  let x = g.input("x", "float32", [N, N]);
  const w = g.input("w", "float32", [N, N]);
  for (let i = 0; i < 20; i++) x = g.op("MatMul", [x, w]);
  g.output(g.op("Identity", [x]), "y", "float32", [N, N]);
  return encodeInline(g, { graphName: "chain" });
}

let session: SessionThread;
beforeAll(async () => {
  // One thread inside ONNX Runtime, so the chain takes tens of milliseconds on any CPU.
  session = await SessionThread.create(chainGraph(), { executionProviders: ["cpu"], intraOpNumThreads: 1, interOpNumThreads: 1 });
});
afterAll(async () => {
  await session?.release();
});

const identityish = () => Float32Array.from({ length: N * N }, (_, i) => (i % (N + 1) === 0 ? 1 : 0));

describe("SessionThread", () => {
  it("reads the graph's inputs and outputs", () => {
    expect(session.inputNames).toEqual(["x", "w"]);
    expect(session.outputNames).toEqual(["y"]);
    expect(session.inputMetadata.map((m) => m.name)).toEqual(["x", "w"]);
  });

  it("leaves the caller's event loop free while a run goes on", async () => {
    const x = new ort.Tensor("float32", Float32Array.from({ length: N * N }, (_, i) => (i % 7) / 7), [N, N]);
    const w = new ort.Tensor("float32", identityish(), [N, N]);
    // The longest gap between timer callbacks while the run is in flight.
    let last = performance.now();
    let longestGap = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      longestGap = Math.max(longestGap, now - last);
      last = now;
    }, 1);
    const started = performance.now();
    const { outputs } = await session.run({ x, w }, ["y"]);
    const runMs = performance.now() - started;
    clearInterval(timer);
    expect(Array.from((outputs.y.data as Float32Array).subarray(0, 8))).toEqual(Array.from((x.data as Float32Array).subarray(0, 8)));
    // On the calling thread the whole run would have been one gap.
    expect(runMs).toBeGreaterThan(15);
    expect(longestGap).toBeLessThan(runMs / 2);
  });

  it("gives lent buffers back whole and resizable, and copies the feeds it was not lent", async () => {
    const lentBuffer = new ArrayBuffer(N * N * 4, { maxByteLength: 2 * N * N * 4 });
    const x = new Float32Array(lentBuffer);
    x.fill(0.5);
    const w = identityish();
    const { outputs, lent } = await session.run({ x: new ort.Tensor("float32", x, [N, N]), w: new ort.Tensor("float32", w, [N, N]) }, ["y"], [lentBuffer]);
    expect(lentBuffer.byteLength).toBe(0); // detached while lent: the thread had it
    expect(lent).toHaveLength(1);
    expect(lent[0].resizable).toBe(true);
    expect(lent[0].maxByteLength).toBe(2 * N * N * 4);
    expect(new Float32Array(lent[0]).every((v) => v === 0.5)).toBe(true);
    expect(w.length).toBe(N * N); // not lent: copied, still the caller's
    expect((outputs.y.data as Float32Array)[0]).toBe(0.5);
  });

  it("gives lent buffers back when the run fails, with ONNX Runtime's reason", async () => {
    const lentBuffer = new ArrayBuffer(4 * 4 * 4);
    const x = new Float32Array(lentBuffer);
    const wrongShape = new ort.Tensor("float32", new Float32Array(16), [4, 4]);
    const failed = await session.run({ x: new ort.Tensor("float32", x, [4, 4]), w: wrongShape }, ["y"], [lentBuffer]).catch((err: unknown) => err);
    expect(failed).toBeInstanceOf(SessionRunError);
    expect((failed as SessionRunError).message).toMatch(/dimension|shape|Got: 4/i);
    expect((failed as SessionRunError).lent[0].byteLength).toBe(4 * 4 * 4);
    // The session still runs afterwards.
    const { outputs } = await session.run({ x: new ort.Tensor("float32", new Float32Array(N * N).fill(2), [N, N]), w: new ort.Tensor("float32", identityish(), [N, N]) }, ["y"]);
    expect((outputs.y.data as Float32Array)[0]).toBe(2);
  });
});
