// A protobuf-es service descriptor seen as a grpc-js service definition: the method paths,
// which side streams, and (de)serialisation through toBinary (serializeMessage, which writes
// large nested bytes fields once) and fromBinary, so no message ever needs a hand-written
// serializer. A request that does not decode is the client's fault, but
// grpc-js answers a throwing deserializer with INTERNAL; so the request deserializer hands over
// an UndecodableRequest instead, and the handler adapter (server.ts) answers INVALID_ARGUMENT.
import type { DescMessage, DescMethod, DescService } from "@bufbuild/protobuf";
import { fromBinary } from "@bufbuild/protobuf";
import type { GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";
import { GrpcError, Status } from "./errors.ts";
import { serializeMessage } from "./message-encoding.ts";

/** What the adapter needs to know about one method of a generated service. */
export type MethodShape = GenServiceMethods[string];

/** Trailing-metadata key carrying the request field an error is about (see errors.ts). */
export const ERROR_FIELD_METADATA_KEY = "lightreasoner-error-field";

/** The HTTP/2 path of a method, e.g. `/lightreasoner.v1.InferenceService/Generate`. */
export const methodPath = (method: DescMethod) => `/${method.parent.typeName}/${method.name}`;

const asBuffer = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

function codec(schema: DescMessage) {
  return {
    serialize: (message: unknown) => asBuffer(serializeMessage(schema, message as object)),
    deserialize: (bytes: Buffer) => fromBinary(schema, bytes),
  };
}

/** Stands in for a request message whose bytes are not a valid encoding of its type. */
export class UndecodableRequest {
  constructor(
    readonly typeName: string,
    readonly reason: string,
  ) {}

  /** What the client is told. */
  error(): GrpcError {
    return new GrpcError(Status.INVALID_ARGUMENT, `the request is not a valid ${this.typeName} message: ${this.reason}`);
  }
}

/** The request itself; INVALID_ARGUMENT (thrown) when its bytes did not decode. */
export function decodedRequest(message: unknown): unknown {
  if (message instanceof UndecodableRequest) throw message.error();
  return message;
}

/** `deserialize`, returning an UndecodableRequest where it would throw. */
export function tolerantDeserializer(typeName: string, deserialize: (bytes: Buffer) => unknown): (bytes: Buffer) => unknown {
  return (bytes) => {
    try {
      return deserialize(bytes);
    } catch (err) {
      return new UndecodableRequest(typeName, err instanceof Error ? err.message : String(err));
    }
  };
}

export function methodDefinition(method: DescMethod): MethodDefinition<unknown, unknown> {
  const request = codec(method.input);
  const response = codec(method.output);
  const requestDeserialize = tolerantDeserializer(method.input.typeName, request.deserialize);
  return {
    path: methodPath(method),
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: request.serialize,
    requestDeserialize,
    responseSerialize: response.serialize,
    responseDeserialize: response.deserialize,
    originalName: method.localName,
  };
}

/** The grpc-js definition of a whole service, keyed by the methods' proto names. */
export function serviceDefinition(service: DescService): ServiceDefinition {
  return Object.fromEntries(service.methods.map((method) => [method.name, methodDefinition(method)]));
}
