// The protobuf-es <-> grpc-js adapter: generated service descriptors (core/gen) served and
// called through @grpc/grpc-js with typed messages only. Application code imports from here.
export { serviceDefinition, methodDefinition, methodPath, ERROR_FIELD_METADATA_KEY } from "./definition.ts";
export type { MethodShape } from "./definition.ts";
export { addService } from "./server.ts";
export type { CallContext, Send, ServiceHandlers, MethodHandler, UnaryHandler, ServerStreamingHandler, ClientStreamingHandler, BidiStreamingHandler, ErrorLogger } from "./server.ts";
export { createClient, toGrpcError, CLIENT_FLOW_CONTROL_WINDOW_BYTES } from "./client.ts";
export type { CallOptions, ClientOptions, ServiceClient, ClientMethod, ClientStreamingCall, BidiStreamingCall } from "./client.ts";
export { GrpcError, Status, invalidArgument, toGrpcStatus } from "./errors.ts";
export type { GrpcStatus } from "./errors.ts";
export { accessPolicy, checkAccess, isReadMethod, describePolicy, logPolicy, scrapeRefusal } from "./access.ts";
export type { AccessOptions, AccessPolicy } from "./access.ts";
export { clientTransport, serverCredentials, isLoopbackAddress, tlsMode } from "./transport-security.ts";
export type { ClientSecurity, ServerTls } from "./transport-security.ts";
