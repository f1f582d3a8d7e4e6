// Shared pieces of the inference service's integration tests: a tiny random expert/amateur
// pair written by init-model (a llama expert and a qwen2 amateur that share init-model's
// tokenizer), a server on loopback ports, typed clients, direct full forwards as the
// reference, and small readers for streams, statuses and the /metrics text.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, expect } from "vitest";
import { createClient, GrpcError } from "#core/grpc/adapter.ts";
import type { ServiceClient } from "#core/grpc/adapter.ts";
import { AdapterService } from "#core/gen/lightreasoner/v1/adapter_pb.ts";
import { DistributionEncoding, FloatDtype } from "#core/gen/lightreasoner/v1/common_pb.ts";
import type { FullDistributions, ScoredPosition } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { InferenceService } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import type { StreamTrajectoriesResponse, TrajectoryStep } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { loadModelDir } from "#core/formats/model-dir.ts";
import { float16BitsToFloat32 } from "#core/math/float16.ts";
import { initModel } from "#core/model/init-model.ts";
import type { WeightMap } from "#core/model/weights.ts";
import type { ModelConfig } from "#core/model/config.ts";
import { startInferenceServer } from "#inference/main.ts";
import type { InferenceServer, InferenceServerOptions } from "#inference/main.ts";
import { buildOnnxModel } from "#inference/model/export.ts";
import { CausalLmSession } from "#inference/model/session.ts";

export type InferenceMethods = (typeof InferenceService)["method"];
export type AdapterMethods = (typeof AdapterService)["method"];

/**
 * Shapes of the pair. initializer_range 0.3 (instead of 0.02) makes the random models'
 * distributions peaked enough that the alpha-plausible set holds a handful of tokens and
 * the expert-amateur KL is far from zero, as with trained models.
 */
const COMMON = { vocab_size: 384, intermediate_size: 128, num_hidden_layers: 2, max_position_embeddings: 1024, initializer_range: 0.3, rope_theta: 10000, rms_norm_eps: 1e-6 };
export const EXPERT_CONFIG = { ...COMMON, model_type: "llama", hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2 };
export const AMATEUR_CONFIG = { ...COMMON, model_type: "qwen2", hidden_size: 32, num_attention_heads: 2, num_key_value_heads: 1 };
export const VOCAB = COMMON.vocab_size;

export interface TinyPair {
  root: string;
  expertDir: string;
  amateurDir: string;
  remove(): void;
}

/** Writes the expert and amateur into a fresh temporary directory. */
export function writeTinyPair(overrides: { expert?: Record<string, unknown>; amateur?: Record<string, unknown> } = {}): TinyPair {
  const root = mkdtempSync(join(tmpdir(), "lightreasoner-inference-"));
  const expertDir = join(root, "expert");
  const amateurDir = join(root, "amateur");
  initModel({ configJson: { ...EXPERT_CONFIG, ...overrides.expert }, seed: 11, outDir: expertDir });
  initModel({ configJson: { ...AMATEUR_CONFIG, ...overrides.amateur }, seed: 22, outDir: amateurDir });
  return { root, expertDir, amateurDir, remove: () => rmSync(root, { recursive: true, force: true }) };
}

export const silentLogger = () => pino({ level: "silent" });

/** A server on 127.0.0.1 with OS-chosen ports for gRPC and metrics, open to every caller (test/security checks credentials). */
export function startServer(pair: Pick<TinyPair, "expertDir" | "amateurDir">, options: Partial<InferenceServerOptions> = {}): Promise<InferenceServer> {
  return startInferenceServer({
    expertDir: pair.expertDir,
    amateurDir: pair.amateurDir,
    host: "127.0.0.1",
    port: 0,
    metricsPort: 0,
    executionProvider: "cpu",
    threads: 1,
    logger: silentLogger(),
    access: { allowUnauthenticated: true },
    ...options,
  });
}

/**
 * A tiny pair served to the tests of the enclosing describe block (or file): written and
 * started before them, closed (running streams get `closeMs`) and removed after. Read
 * `pair` and `server` inside the tests, once the hooks have run.
 */
export function servedTinyPair(closeMs = 1000): { readonly pair: TinyPair; readonly server: InferenceServer } {
  const served = {} as { pair: TinyPair; server: InferenceServer };
  beforeAll(async () => {
    served.pair = writeTinyPair();
    served.server = await startServer(served.pair);
  });
  afterAll(async () => {
    await served.server?.close(closeMs);
    served.pair?.remove();
  });
  return served;
}

export function clients(server: InferenceServer): { inference: ServiceClient<InferenceMethods>; adapters: ServiceClient<AdapterMethods>; close(): void } {
  const inference = createClient(InferenceService, server.address);
  const adapters = createClient(AdapterService, inference.channel);
  return { inference, adapters, close: () => inference.close() };
}

export async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const message of stream) out.push(message);
  return out;
}

/** The GrpcError a call fails with (the test fails if it succeeds). */
export async function statusOf(work: () => Promise<unknown>): Promise<GrpcError> {
  try {
    await work();
  } catch (err) {
    expect(err).toBeInstanceOf(GrpcError);
    return err as GrpcError;
  }
  throw new Error("expected the call to fail");
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns true (or fails the test after `timeoutMs`). */
export async function eventually(check: () => Promise<boolean> | boolean, timeoutMs = 10_000, what = "condition"): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

// ---------------------------------------------------------------------------------------
// Adapters

/** Uploads an adapter's two files in 1 KiB chunks (`declared` may lie, to test the framing checks). */
export async function uploadAdapter(c: { adapters: ServiceClient<AdapterMethods> }, files: { configJson: string; safetensors: Uint8Array }, activate: boolean, declared = files.safetensors.length) {
  const call = c.adapters.uploadAdapter();
  await call.write({ part: { case: "header", value: { adapterConfigJson: files.configJson, safetensorsSize: declared, activate } } });
  for (let offset = 0; offset < files.safetensors.length; offset += 1024) await call.write({ part: { case: "safetensorsChunk", value: files.safetensors.subarray(offset, offset + 1024) } });
  return call.end();
}

// ---------------------------------------------------------------------------------------
// Requests

export const textPrompt = (value: string) => ({ source: { case: "text" as const, value } });
export const idsPrompt = (ids: number[]) => ({ source: { case: "tokenIds" as const, value: { ids } } });
export const FULL32 = { encoding: DistributionEncoding.FULL, dtype: FloatDtype.FLOAT32 };
export const FULL16 = { encoding: DistributionEncoding.FULL, dtype: FloatDtype.FLOAT16 };
export const sparse = (alpha = 0.2, topK = 0) => ({ encoding: DistributionEncoding.SPARSE, alpha, topK });

/** A step as the tests read it: byRequest checked that it carries its scored position and chosen token. */
export type Step = TrajectoryStep & { scored: ScoredPosition & { tokenId: number } };

export interface Trajectory {
  id: string;
  events: StreamTrajectoriesResponse[];
  promptIds: number[];
  steps: Step[];
  finished: Extract<StreamTrajectoriesResponse["event"], { case: "finished" }>["value"];
  adapterVersion: string;
  seed: number;
}

/** Splits a StreamTrajectories response stream by request id, checking each one's order. */
export function byRequest(messages: StreamTrajectoriesResponse[]): Map<string, Trajectory> {
  const out = new Map<string, Trajectory>();
  for (const m of messages) {
    let t = out.get(m.requestId);
    if (!t) {
      t = { id: m.requestId, events: [], promptIds: [], steps: [], finished: undefined as never, adapterVersion: "", seed: 0 };
      out.set(m.requestId, t);
    }
    expect(t.finished, `${m.requestId} got a message after finished`).toBeUndefined();
    t.events.push(m);
    if (m.event.case === "started") {
      t.promptIds = [...m.event.value.promptTokenIds];
      t.adapterVersion = m.event.value.adapterVersion;
      t.seed = m.event.value.seed;
    } else if (m.event.case === "step") {
      const step = m.event.value;
      expect(step.step).toBe(t.steps.length);
      expect(step.scored?.tokenId, `${m.requestId} step ${step.step}: scored.token_id`).toBeTypeOf("number");
      t.steps.push(step as Step);
    } else if (m.event.case === "finished") t.finished = m.event.value;
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Distributions

/** A FULL field's bytes back to float32 values. */
export function decodeFull(bytes: Uint8Array, dtype: FloatDtype): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dtype === FloatDtype.FLOAT16) return Float32Array.from({ length: bytes.length / 2 }, (_, i) => float16BitsToFloat32(view.getUint16(i * 2, true)));
  return Float32Array.from({ length: bytes.length / 4 }, (_, i) => view.getFloat32(i * 4, true));
}

export function fullOf(step: { distributions: ScoredPosition["distributions"] }): { expert: Float32Array; amateur: Float32Array } {
  expect(step.distributions.case).toBe("full");
  const full = step.distributions.value as FullDistributions;
  return { expert: decodeFull(full.expertLogProbs, full.dtype), amateur: decodeFull(full.amateurLogProbs, full.dtype) };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= max)) max = d;
  }
  return max;
}

/** An ONNX Runtime session over a model directory's weights (optionally replaced), outside any server. */
export async function openDirect(dir: string, replace?: (config: ModelConfig, weights: WeightMap) => WeightMap): Promise<CausalLmSession> {
  const { config, weights } = loadModelDir(dir);
  return CausalLmSession.open(buildOnnxModel(config, replace ? replace(config, weights) : weights), { executionProvider: "cpu", threads: 1 });
}

/** log-softmax rows of ONE full forward over `ids`: row t is the distribution over the token at position t + 1. */
export async function fullForward(session: CausalLmSession, ids: number[]): Promise<Float32Array[]> {
  const [result] = await session.step([{ cache: session.newCache(), tokens: ids, allPositions: true }]);
  const V = result.logProbs.length;
  return ids.map((_, t) => result.positionLogProbs!.subarray(t * V, (t + 1) * V));
}

// ---------------------------------------------------------------------------------------
// Metrics

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export async function scrape(server: InferenceServer): Promise<Sample[]> {
  const response = await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`);
  expect(response.status).toBe(200);
  const samples: Sample[] = [];
  for (const line of (await response.text()).split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

/** The value of one series (0 when absent, as Prometheus would treat an unset counter). */
export function metric(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return found.reduce((sum, s) => sum + s.value, 0);
}
