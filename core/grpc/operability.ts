// Standard gRPC health checking (grpc.health.v1) and server reflection (grpc.reflection.v1
// and v1alpha, so grpcurl-style clients can list and call our services without .proto files).
// Reflection is fed the descriptors embedded in the generated code: no extra build artifact.
// Both answer undecodable requests with INVALID_ARGUMENT, as our own services do.
import type { DescFile, DescService } from "@bufbuild/protobuf";
import { toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import type { ServingStatus } from "grpc-health-check";
import { tolerantDeserializer, UndecodableRequest } from "./definition.ts";

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
  health.addToServer(refusingUndecodable(server));
  new ReflectionService(reflectionPackage(services), { services: names }).addToServer(refusingUndecodable(server));
  return health;
}

/**
 * `server` as seen by a library registering its own service: a request that does not decode
 * is answered INVALID_ARGUMENT (grpc-js would answer INTERNAL) and never reaches the library's
 * handler. On a request stream the first undecodable message ends the call.
 */
function refusingUndecodable(server: grpc.Server): Pick<grpc.Server, "addService"> {
  const addService: grpc.Server["addService"] = (service, implementation) => {
    const handlers: grpc.UntypedServiceImplementation = { ...implementation };
    const definition = Object.fromEntries(
      Object.entries(service).map(([name, method]) => {
        // grpc-js finds a handler under the method's name or its original (camelCase) name.
        const key = name in implementation ? name : method.originalName;
        const handler = key === undefined ? undefined : (implementation[key] as (...args: unknown[]) => void);
        if (key !== undefined && handler !== undefined) {
          handlers[key] = (method.requestStream ? refusingOnStream(handler) : refusingOnce(handler)) as grpc.UntypedHandleCall;
        }
        return [name, { ...method, requestDeserialize: tolerantDeserializer(requestTypeName(method), method.requestDeserialize) }];
      }),
    ) as grpc.ServiceDefinition;
    server.addService(definition, handlers);
  };
  return { addService };
}

// grpc-js hands handlers calls of several shapes.
type Handler = (...args: any[]) => void;

/** A unary or server-streaming handler that runs only on a request that decoded. */
function refusingOnce(handler: Handler): Handler {
  return (call: grpc.ServerUnaryCall<unknown, unknown>, callback?: grpc.sendUnaryData<unknown>) => {
    if (!(call.request instanceof UndecodableRequest)) return handler(call, callback);
    const { code, message } = call.request.error();
    // A server-streaming call ends with the status of an "error" event.
    if (callback) callback({ code, details: message });
    else call.emit("error", { code, details: message });
  };
}

/**
 * A request-streaming handler that sees the call through a view whose "data" listeners get
 * decoded messages only: the first undecodable one ends the call with its status instead.
 */
function refusingOnStream(handler: Handler): Handler {
  return (call: grpc.ServerDuplexStream<unknown, unknown>) => {
    let refused = false;
    const onData = (listener: (message: unknown) => void) => (message: unknown) => {
      if (refused) return;
      if (!(message instanceof UndecodableRequest)) return listener(message);
      refused = true;
      const { code, message: details } = message.error();
      call.emit("error", { code, details });
    };
    const view = new Proxy(call, {
      get(target, property) {
        if (property === "on" || property === "addListener") {
          return (event: string, listener: (...args: unknown[]) => void) =>
            target.on(event, event === "data" ? onData(listener as (message: unknown) => void) : listener);
        }
        const value = Reflect.get(target, property, target) as unknown;
        return typeof value === "function" ? (value as Handler).bind(target) : value;
      },
    });
    handler(view);
  };
}

/** `grpc.health.v1.HealthCheckRequest` for a proto-loader method definition of `/grpc.health.v1.Health/Check`. */
function requestTypeName(method: grpc.MethodDefinition<unknown, unknown>): string {
  const type = (method as { requestType?: { type?: { name?: string } } }).requestType?.type?.name;
  const servicePackage = method.path.split("/")[1].split(".").slice(0, -1).join(".");
  return type ? `${servicePackage}.${type}` : `request of ${method.path}`;
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
