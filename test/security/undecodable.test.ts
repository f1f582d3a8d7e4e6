// Regression: a request whose bytes are not a valid protobuf encoding of its type was answered
// INTERNAL ("Error deserializing request", grpc-js's answer to a throwing deserializer). It is
// the client's fault, so every method of both services, of every kind, answers INVALID_ARGUMENT
// naming the message type; inside a request stream, a bad message after good ones too; the
// standard health check as well; and the server serves normally afterwards.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { DescMethod } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Status } from "#core/grpc/adapter.ts";
import { AdapterService, UploadAdapterRequestSchema } from "#core/gen/lightreasoner/v1/adapter_pb.ts";
import { InferenceService, StreamTrajectoriesRequestSchema } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { TrainerService } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import { SeededRandom } from "#core/math/random.ts";
import { rawCall, rawMethod } from "./raw-calls.ts";
import { startSecurityServers } from "./servers.ts";
import type { SecurityServers } from "./servers.ts";

let servers: SecurityServers;
beforeAll(async () => {
  servers = await startSecurityServers({ trainer: true });
});
afterAll(async () => {
  await servers?.close();
});

// Field 1 with wire type 7, which does not exist: no message type can decode this.
const GARBAGE = Uint8Array.of(0x0f, 0xff, 0x00);
const DEADLINE_MS = 5000;

const every = (service: { methods: DescMethod[] }, server: "inference" | "trainer") => service.methods.map((method) => [method.parent.name, method.name, method, server] as const);

describe("undecodable requests are INVALID_ARGUMENT, for every method", () => {
  it.each([...every(InferenceService, "inference"), ...every(AdapterService, "inference"), ...every(TrainerService, "trainer")])(
    "%s/%s",
    async (_service, _name, method, server) => {
      const client = servers.raw[server]!;
      const answer = await rawCall(client, rawMethod(method), [GARBAGE], DEADLINE_MS);
      expect(answer.code, answer.details).toBe(Status.INVALID_ARGUMENT);
      expect(answer.details).toMatch(new RegExp(`^the request is not a valid ${method.input.typeName.replace(/\./g, "\\.")} message: `));
      expect(answer.messages).toBe(0);
    },
  );
});

describe("the standard health check answers undecodable requests with INVALID_ARGUMENT too", () => {
  it.each([
    ["Check", false],
    ["Watch", true],
  ])("grpc.health.v1.Health/%s", async (name, responseStream) => {
    // An unknown 4-byte field with no bytes (the library's decoder is lenient with GARBAGE).
    const truncated = Uint8Array.of(0x65);
    const answer = await rawCall(servers.raw.inference, { path: `/grpc.health.v1.Health/${name}`, requestStream: false, responseStream }, [truncated], DEADLINE_MS);
    expect([answer.code, answer.details]).toEqual([Status.INVALID_ARGUMENT, expect.stringMatching(/^the request is not a valid grpc\.health\.v1\.HealthCheckRequest message: /)]);
    const served = await rawCall(servers.raw.inference, { path: "/grpc.health.v1.Health/Check", requestStream: false, responseStream: false }, [new Uint8Array(0)], DEADLINE_MS);
    expect(served.code).toBe(Status.OK);
  });
});

describe("server reflection answers an undecodable message with INVALID_ARGUMENT too", () => {
  it.each(["grpc.reflection.v1", "grpc.reflection.v1alpha"])("%s.ServerReflection/ServerReflectionInfo", async (pkg) => {
    const method = { path: `/${pkg}.ServerReflection/ServerReflectionInfo`, requestStream: true, responseStream: true };
    // Field 7 (list_services), an empty string: "which services are there?".
    const listServices = Uint8Array.of(0x3a, 0x00);
    const truncated = Uint8Array.of(0x65);
    const good = await rawCall(servers.raw.inference, method, [listServices], DEADLINE_MS);
    expect([good.code, good.messages]).toEqual([Status.OK, 1]);
    const answer = await rawCall(servers.raw.inference, method, [listServices, truncated, listServices], DEADLINE_MS);
    expect([answer.code, answer.details]).toEqual([Status.INVALID_ARGUMENT, expect.stringMatching(new RegExp(`^the request is not a valid ${pkg.replace(/\./g, "\\.")}\\.ServerReflectionRequest message: `))]);
    expect(answer.messages).toBe(1);
  });
});

describe("inside a request stream, a bad message after good ones ends the call with INVALID_ARGUMENT", () => {
  it("StreamTrajectories: a cancel for an unknown id, then garbage", async () => {
    const good = toBinary(StreamTrajectoriesRequestSchema, create(StreamTrajectoriesRequestSchema, { requestId: "a", action: { case: "cancel", value: {} } }));
    const answer = await rawCall(servers.raw.inference, rawMethod(InferenceService.method.streamTrajectories), [good, GARBAGE], DEADLINE_MS);
    expect([answer.code, answer.details]).toEqual([Status.INVALID_ARGUMENT, expect.stringContaining("not a valid lightreasoner.v1.StreamTrajectoriesRequest message")]);
  });

  it("UploadAdapter: a header, then garbage", async () => {
    const header = toBinary(UploadAdapterRequestSchema, create(UploadAdapterRequestSchema, { part: { case: "header", value: { adapterConfigJson: "{}", safetensorsSize: 8 } } }));
    const answer = await rawCall(servers.raw.inference, rawMethod(AdapterService.method.uploadAdapter), [header, GARBAGE], DEADLINE_MS);
    expect([answer.code, answer.details]).toEqual([Status.INVALID_ARGUMENT, expect.stringContaining("not a valid lightreasoner.v1.UploadAdapterRequest message")]);
  });
});

describe("random bytes", () => {
  it("get INVALID_ARGUMENT exactly when they do not decode, and never INTERNAL; the server serves on", async () => {
    const rng = new SeededRandom(14);
    const method = InferenceService.method.getModelInfo;
    let undecodable = 0;
    for (let i = 0; i < 40; i++) {
      const bytes = Uint8Array.from({ length: 1 + Math.floor(rng.next() * 32) }, () => Math.floor(rng.next() * 256));
      let decodes = true;
      try {
        fromBinary(method.input, bytes);
      } catch {
        decodes = false;
      }
      const answer = await rawCall(servers.raw.inference, rawMethod(method), [bytes], DEADLINE_MS);
      expect(answer.code, `${Buffer.from(bytes).toString("hex")}: ${answer.details}`).toBe(decodes ? Status.OK : Status.INVALID_ARGUMENT);
      if (!decodes) undecodable++;
    }
    // Most random bytes do not decode; the test would prove little if none failed.
    expect(undecodable).toBeGreaterThan(20);
    const info = await servers.typed.inference.getModelInfo({});
    expect(info.vocabSize).toBe(384);
  });
});
