// A seeded, bounded fuzz test of every RPC of both services (InferenceService, AdapterService,
// TrainerService) and of the standard health check, on real servers over loopback: random
// bytes, bit flips, truncations and field-level edits of real, valid requests (mutate.ts).
// Every call carries a deadline. It asserts that every call ends with a status (no hang), that
// malformed or hostile input never gets INTERNAL or UNKNOWN (an error the server did not
// recognise), and that the servers still serve normally afterwards.
// The seed is printed with every failing case; FUZZ_SEED=<n> replays or explores another run.
import { create, toBinary } from "@bufbuild/protobuf";
import type { DescMessage, DescMethod, MessageInitShape } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodePeftAdapter, writePeftAdapter } from "#core/formats/peft.ts";
import { Status } from "#core/grpc/adapter.ts";
import { AdapterService } from "#core/gen/lightreasoner/v1/adapter_pb.ts";
import { DistributionEncoding } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { GenerationMode, InferenceService, TrajectoryCancelSchema } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { RunState, TrainerService } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import { SeededRandom } from "#core/math/random.ts";
import { collect, idsPrompt } from "#test/inference/helpers.ts";
import { smallRun } from "#test/trainer/helpers.ts";
import { mutate } from "./mutate.ts";
import type { Mutation } from "./mutate.ts";
import { rawCall, rawMethod } from "./raw-calls.ts";
import type { RawAnswer, RawMethod } from "./raw-calls.ts";
import { randomAdapter, startSecurityServers } from "./servers.ts";
import type { SecurityServers } from "./servers.ts";

const SEED = Number(process.env.FUZZ_SEED ?? 20261207);
/** Cases per method and mutation kind: 4 kinds x 6 x 17 methods is about 400 calls (FUZZ_CASES=<n> for a longer hunt). */
const CASES_PER_KIND = Number(process.env.FUZZ_CASES ?? 6);
const MUTATIONS: Mutation[] = ["random bytes", "bit flips", "truncation", "field edit"];
const DEADLINE_MS = 10_000;
const CONCURRENCY = 6;
/** Codes that mean the server did not recognise what went wrong: never right for bad input. */
const UNRECOGNISED = new Set([Status.INTERNAL, Status.UNKNOWN]);

let servers: SecurityServers;
beforeAll(async () => {
  // Small limits keep the valid-looking requests among the mutations quick on the tiny pair.
  servers = await startSecurityServers({ trainer: true, limits: { maxNewTokens: 12, defaultMaxNewTokens: 6, maxPromptTokens: 48, maxTopK: 8 } });
});
afterAll(async () => {
  await servers?.close();
});

/** One method under fuzz: where to call it, and real requests (one, or a request stream) to mutate. */
interface Target {
  name: string;
  client: () => grpc.Client;
  method: RawMethod;
  valid: () => Uint8Array[];
}

const encode = <S extends DescMessage>(schema: S, init: MessageInitShape<S>) => toBinary(schema, create(schema, init));

function target<M extends DescMethod>(method: M, server: "inference" | "trainer", requests: () => NoInfer<MessageInitShape<M["input"]>>[]): Target {
  return {
    name: `${method.parent.name}/${method.name}`,
    client: () => servers.raw[server]!,
    method: rawMethod(method),
    valid: () => requests().map((r) => encode(method.input, r)),
  };
}

/** A real adapter for the tiny expert, as UploadAdapter messages. */
function uploadMessages() {
  const { configJson, safetensors } = encodePeftAdapter(randomAdapter(3));
  return [
    { part: { case: "header" as const, value: { adapterConfigJson: configJson, safetensorsSize: safetensors.length } } },
    { part: { case: "safetensorsChunk" as const, value: safetensors } },
  ];
}

const PROMPT = idsPrompt([2, 77, 350, 113]);
const SPARSE = { encoding: DistributionEncoding.SPARSE, alpha: 0.2, topK: 4 };
const inf = InferenceService.method;
const ad = AdapterService.method;
const tr = TrainerService.method;

const targets = (): Target[] => [
  target(inf.streamTrajectories, "inference", () => [
    { requestId: "a", action: { case: "start" as const, value: { prompt: PROMPT, sampling: { maxNewTokens: 4, seed: 1 }, distributions: SPARSE } } },
    { requestId: "b", action: { case: "cancel" as const, value: create(TrajectoryCancelSchema) } },
  ]),
  target(inf.generate, "inference", () => [{ prompt: PROMPT, sampling: { maxNewTokens: 4, temperature: 0.7, topP: 0.9, stopStrings: ["\n"] }, mode: GenerationMode.CONTRASTIVE, alpha: 0.1 }]),
  target(inf.score, "inference", () => [{ prompt: PROMPT, firstPosition: 1, distributions: SPARSE }]),
  target(inf.getModelInfo, "inference", () => [{}]),
  target(ad.uploadAdapter, "inference", uploadMessages),
  target(ad.loadAdapter, "inference", () => [{ directory: `${servers.adapterDir}/good` }]),
  target(ad.listAdapters, "inference", () => [{}]),
  target(ad.activateAdapter, "inference", () => [{ version: "0123456789abcdef" }]),
  target(ad.rollbackToBase, "inference", () => [{}]),
  target(ad.unloadAdapter, "inference", () => [{ version: "0123456789abcdef" }]),
  target(tr.startRun, "trainer", () => [{ runId: "fuzz-run", config: smallRun(servers.problemsFile), validateOnly: true }]),
  target(tr.resumeRun, "trainer", () => [{ runId: "fuzz-run" }]),
  // Not "fuzz-run": a mutated StartRun may really start that run, and watching it would last as long as the run.
  target(tr.watchRun, "trainer", () => [{ runId: "fuzz-watch" }]),
  target(tr.getRun, "trainer", () => [{ runId: "fuzz-run" }]),
  target(tr.listRuns, "trainer", () => [{ state: RunState.RUNNING }]),
  target(tr.cancelRun, "trainer", () => [{ runId: "fuzz-run" }]),
  {
    // grpc.health.v1.HealthCheckRequest { string service = 1; }
    name: "Health/Check",
    client: () => servers.raw.inference,
    method: { path: "/grpc.health.v1.Health/Check", requestStream: false, responseStream: false },
    valid: () => {
      const service = new TextEncoder().encode("lightreasoner.v1.InferenceService");
      return [Uint8Array.of(0x0a, service.length, ...service)];
    },
  },
];

interface Case {
  target: string;
  mutation: Mutation;
  index: number;
  payloads: Uint8Array[];
}

/** Every case, drawn from one seeded stream so a seed names the whole run. */
function cases(rng: SeededRandom): { target: Target; c: Case }[] {
  const out: { target: Target; c: Case }[] = [];
  for (const t of targets()) {
    for (const mutation of MUTATIONS) {
      for (let index = 0; index < CASES_PER_KIND; index++) {
        const payloads = t.valid();
        // In a request stream one message, picked at random, is the mutated one.
        const at = Math.floor(rng.next() * payloads.length);
        payloads[at] = mutate(mutation, payloads[at], rng);
        out.push({ target: t, c: { target: t.name, mutation, index, payloads } });
      }
    }
  }
  return out;
}

const hex = (bytes: Uint8Array) => (bytes.length > 48 ? `${Buffer.from(bytes.subarray(0, 48)).toString("hex")}... (${bytes.length} bytes)` : Buffer.from(bytes).toString("hex"));

async function runAll(all: { target: Target; c: Case }[]): Promise<{ c: Case; answer: RawAnswer }[]> {
  const results: { c: Case; answer: RawAnswer }[] = [];
  let next = 0;
  const worker = async () => {
    while (next < all.length) {
      const { target: t, c } = all[next++];
      results.push({ c, answer: await rawCall(t.client(), t.method, c.payloads, DEADLINE_MS) });
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return results;
}

describe(`fuzzing every RPC (seed ${SEED})`, () => {
  let results: { c: Case; answer: RawAnswer }[] = [];

  beforeAll(async () => {
    // LoadAdapter's valid request names a real adapter directory.
    writePeftAdapter(`${servers.adapterDir}/good`, randomAdapter(5, ["q_proj"]));
    results = await runAll(cases(new SeededRandom(SEED)));
    // A mutated StartRun may have started a real run; stop it so it does not outlive the test.
    const running = await servers.trainer!.client.listRuns({ state: RunState.RUNNING });
    for (const run of running.runs) await servers.trainer!.client.cancelRun({ runId: run.runId });
  });

  it("ran every method with every kind of mutation", () => {
    const names = new Set(results.map((r) => r.c.target));
    expect(names.size).toBe(targets().length);
    expect(results.length).toBe(targets().length * MUTATIONS.length * CASES_PER_KIND);
  });

  it("every call ended with a status before its deadline, and none was INTERNAL or UNKNOWN", () => {
    const bad = results.filter(({ answer }) => UNRECOGNISED.has(answer.code) || answer.code === Status.DEADLINE_EXCEEDED);
    const report = bad.map(({ c, answer }) => `seed ${SEED} ${c.target} ${c.mutation} #${c.index}: ${Status[answer.code]} "${answer.details}" after ${answer.ms.toFixed(0)} ms; messages ${c.payloads.map(hex).join(" | ")}`);
    expect(report).toEqual([]);
  });

  it("refused malformed input with the client's codes: mostly INVALID_ARGUMENT, and some calls still succeeded", () => {
    const byCode = new Map<string, number>();
    for (const { answer } of results) byCode.set(Status[answer.code], (byCode.get(Status[answer.code]) ?? 0) + 1);
    const summary = JSON.stringify(Object.fromEntries(byCode));
    if (process.env.FUZZ_SUMMARY) console.log(`fuzz seed ${SEED}: ${results.length} calls, ${summary}`);
    expect(byCode.get("INVALID_ARGUMENT") ?? 0, summary).toBeGreaterThan(results.length / 3);
    // Mutations that keep a request valid (a changed id, a dropped optional field) reach the handlers.
    expect(byCode.get("OK") ?? 0, summary).toBeGreaterThan(20);
  });

  it("the servers still serve: model info, a generation, the adapters, the runs, health", async () => {
    const info = await servers.typed.inference.getModelInfo({});
    expect(info.vocabSize).toBe(384);
    const generated = await collect(servers.typed.inference.generate({ prompt: PROMPT, sampling: { maxNewTokens: 3 }, mode: GenerationMode.EXPERT }));
    expect(generated.at(-1)?.event.case).toBe("finished");
    await servers.typed.adapters.listAdapters({});
    await servers.trainer!.client.listRuns({});
    const health = await rawCall(servers.raw.trainer!, { path: "/grpc.health.v1.Health/Check", requestStream: false, responseStream: false }, [new Uint8Array(0)], DEADLINE_MS);
    expect(health.code).toBe(Status.OK);
  });
});
