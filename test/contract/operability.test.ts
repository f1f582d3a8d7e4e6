// Health checking and server reflection on a real server, called the way an outside client
// would: the Health and ServerReflection descriptors are compiled here by buf from the .proto
// files the two libraries ship, and the services found through reflection are then called
// with descriptors rebuilt from what reflection returned (what grpcurl does).
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { DescMessage, DescService } from "@bufbuild/protobuf";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import type { GenService } from "@bufbuild/protobuf/codegenv2";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addService, createClient, GrpcError, Status } from "#core/grpc/adapter.ts";
import type { ServiceHandlers } from "#core/grpc/adapter.ts";
import { addHealthAndReflection } from "#core/grpc/operability.ts";
import type { HealthImplementation } from "#core/grpc/operability.ts";
import { AdapterService } from "#core/gen/lightreasoner/v1/adapter_pb.ts";
import { InferenceService } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { listen } from "./loopback.ts";
import type { Loopback } from "./loopback.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
const require = createRequire(import.meta.url);

/** Compiles `file` (relative to `dir`) with buf into a registry of its descriptors. */
function compile(dir: string, file: string) {
  const result = spawnSync(join(root, "node_modules", ".bin", "buf"), ["build", dir, "--path", join(dir, file), "-o", "-"], { cwd: root });
  if (result.status !== 0) throw new Error(`buf build ${file}: ${result.stderr}`);
  return createFileRegistry(fromBinary(FileDescriptorSetSchema, result.stdout));
}

// Descriptors found at run time, typed loosely enough for createClient.
const unaryClient = (service: DescService, address: string) =>
  createClient(service as unknown as GenService<Record<string, { methodKind: "unary"; input: DescMessage; output: DescMessage }>>, address);
const bidiClient = (service: DescService, address: string) =>
  createClient(service as unknown as GenService<Record<string, { methodKind: "bidi_streaming"; input: DescMessage; output: DescMessage }>>, address);

const unimplemented = async () => {
  throw new GrpcError(Status.UNIMPLEMENTED, "not in this test");
};
const inference = {
  getModelInfo: () => ({ vocabSize: 32000, adapterVersion: "feedface" }),
  generate: unimplemented,
  score: unimplemented,
  streamTrajectories: unimplemented,
} satisfies ServiceHandlers<typeof InferenceService.method>;

let loopback: Loopback;
let health: HealthImplementation;

beforeAll(async () => {
  const server = new grpc.Server();
  addService(server, InferenceService, inference);
  health = addHealthAndReflection(server, [InferenceService, AdapterService]);
  loopback = await listen(server);
});
afterAll(() => loopback?.stop());

describe("health checking (grpc.health.v1)", () => {
  const healthDir = dirname(require.resolve("grpc-health-check/proto/health/v1/health.proto"));
  const Health = compile(join(healthDir, "..", ".."), "health/v1/health.proto").getService("grpc.health.v1.Health");

  it("reports SERVING for the server and each service, and follows setStatus", async () => {
    expect(Health).toBeDefined();
    const client = unaryClient(Health!, loopback.address);
    const statusOf = async (service: string) => ((await client.check({ service })) as unknown as { status: number }).status;
    const SERVING = 1;
    const NOT_SERVING = 2;
    expect(await statusOf("")).toBe(SERVING);
    expect(await statusOf("lightreasoner.v1.InferenceService")).toBe(SERVING);
    expect(await statusOf("lightreasoner.v1.AdapterService")).toBe(SERVING);
    health.setStatus("lightreasoner.v1.InferenceService", "NOT_SERVING");
    expect(await statusOf("lightreasoner.v1.InferenceService")).toBe(NOT_SERVING);
    health.setStatus("lightreasoner.v1.InferenceService", "SERVING");
    await expect(client.check({ service: "no.such.Service" })).rejects.toMatchObject({ code: Status.NOT_FOUND });
    client.close();
  });
});

describe("server reflection (grpc.reflection.v1)", () => {
  const reflectionDir = join(dirname(require.resolve("@grpc/reflection")), "..", "proto");
  const Reflection = compile(reflectionDir, "grpc/reflection/v1/reflection.proto").getService("grpc.reflection.v1.ServerReflection");

  /** One request/response exchange on a ServerReflectionInfo stream. */
  async function ask(request: Record<string, unknown>): Promise<Record<string, { case?: string; value?: unknown }>> {
    const client = bidiClient(Reflection!, loopback.address);
    const call = client.serverReflectionInfo();
    await call.write(request);
    call.end();
    const responses: unknown[] = [];
    for await (const response of call) responses.push(response);
    client.close();
    expect(responses).toHaveLength(1);
    return responses[0] as Record<string, { case?: string; value?: unknown }>;
  }

  it("lists our services", async () => {
    expect(Reflection).toBeDefined();
    const response = await ask({ messageRequest: { case: "listServices", value: "*" } });
    expect(response.messageResponse.case).toBe("listServicesResponse");
    const names = (response.messageResponse.value as { service: { name: string }[] }).service.map((s) => s.name).sort();
    expect(names).toEqual(["lightreasoner.v1.AdapterService", "lightreasoner.v1.InferenceService"]);
  });

  it("returns descriptors a client can call the service with", async () => {
    const response = await ask({ messageRequest: { case: "fileContainingSymbol", value: "lightreasoner.v1.InferenceService" } });
    expect(response.messageResponse.case).toBe("fileDescriptorResponse");
    const files = (response.messageResponse.value as { fileDescriptorProto: Uint8Array[] }).fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
    expect(files.map((f) => f.name).sort()).toEqual(["lightreasoner/v1/common.proto", "lightreasoner/v1/inference.proto"]);

    const byName = new Map(files.map((file) => [file.name, file]));
    const registry = createFileRegistry(byName.get("lightreasoner/v1/inference.proto")!, (name) => byName.get(name));
    const Found = registry.getService("lightreasoner.v1.InferenceService");
    expect(Found?.methods.map((m) => `${m.name}:${m.methodKind}`)).toEqual([
      "StreamTrajectories:bidi_streaming",
      "Generate:server_streaming",
      "Score:server_streaming",
      "GetModelInfo:unary",
    ]);
    const client = unaryClient(Found!, loopback.address);
    const info = (await client.getModelInfo({})) as unknown as { vocabSize: number; adapterVersion: string };
    expect([info.vocabSize, info.adapterVersion]).toEqual([32000, "feedface"]);
    client.close();
  });

  it("includes imported well-known types", async () => {
    const response = await ask({ messageRequest: { case: "fileContainingSymbol", value: "lightreasoner.v1.AdapterService" } });
    const files = (response.messageResponse.value as { fileDescriptorProto: Uint8Array[] }).fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
    expect(files.map((f) => f.name).sort()).toEqual(["google/protobuf/timestamp.proto", "lightreasoner/v1/adapter.proto"]);
  });
});
