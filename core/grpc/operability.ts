// Standard gRPC health checking (grpc.health.v1) and server reflection (grpc.reflection.v1
// and v1alpha, so grpcurl-style clients can list and call our services without .proto files).
// Reflection is fed the descriptors embedded in the generated code: no extra build artifact.
import type { DescFile, DescService } from "@bufbuild/protobuf";
import { toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import type { ServingStatus } from "grpc-health-check";

export { HealthImplementation };
export type { ServingStatus };

type ReflectionPackage = ConstructorParameters<typeof ReflectionService>[0];

/**
 * Adds Health and ServerReflection to `server` for `services`. The returned health
 * implementation reports `initial` for the whole server ("") and for each service by its
 * full name until changed with `setStatus` (e.g. NOT_SERVING while shutting down).
 */
export function addHealthAndReflection(server: grpc.Server, services: readonly DescService[], initial: ServingStatus = "SERVING"): HealthImplementation {
  const names = services.map((service) => service.typeName);
  const health = new HealthImplementation(Object.fromEntries([["", initial], ...names.map((name) => [name, initial])]));
  health.addToServer(server);
  new ReflectionService(reflectionPackage(services), { services: names }).addToServer(server);
  return health;
}

/** The files declaring `services` and everything they import, as serialized FileDescriptorProtos. */
export function fileDescriptorProtos(services: readonly DescService[]): Uint8Array[] {
  const files = new Map<string, DescFile>();
  const visit = (file: DescFile) => {
    if (files.has(file.proto.name)) return;
    files.set(file.proto.name, file);
    file.dependencies.forEach(visit);
  };
  services.forEach((service) => visit(service.file));
  return [...files.values()].map((file) => toBinary(FileDescriptorProtoSchema, file.proto));
}

// @grpc/reflection reads only `fileDescriptorProtos` from a proto-loader package definition.
function reflectionPackage(services: readonly DescService[]): ReflectionPackage {
  const protos = fileDescriptorProtos(services).map((bytes) => Buffer.from(bytes));
  const entry = { format: "Protocol Buffer 3 DescriptorProto", type: {}, fileDescriptorProtos: protos };
  return Object.fromEntries(services.map((service) => [service.typeName, entry])) as unknown as ReflectionPackage;
}
