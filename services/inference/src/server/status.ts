// The one place where the engine's typed errors become gRPC status codes, for whole calls
// (a GrpcError the adapter turns into the call's status) and for one trajectory inside a
// multiplexed call (a RequestError message). Everything else passes to core/grpc/errors.ts,
// which maps file and model errors and hides unrecognised ones as INTERNAL.
import { GrpcError, Status, toGrpcStatus } from "#core/grpc/adapter.ts";
import { ChatTemplateError } from "#core/formats/chat-template.ts";
import {
  CapacityError,
  InvalidRequestError,
  MismatchedPairError,
  NotFoundError,
  PermissionDeniedError,
  PreconditionError,
  ShuttingDownError,
} from "#inference/engine/errors.ts";

/** The engine error as a GrpcError carrying its code and field; other values are returned unchanged. */
export function asGrpcError(err: unknown): unknown {
  if (err instanceof GrpcError) return err;
  if (err instanceof InvalidRequestError) return new GrpcError(Status.INVALID_ARGUMENT, err.message, err.field);
  if (err instanceof CapacityError) return new GrpcError(Status.RESOURCE_EXHAUSTED, err.message, err.field);
  if (err instanceof PreconditionError) return new GrpcError(Status.FAILED_PRECONDITION, err.message, err.field);
  if (err instanceof NotFoundError) return new GrpcError(Status.NOT_FOUND, err.message, err.field);
  if (err instanceof PermissionDeniedError) return new GrpcError(Status.PERMISSION_DENIED, err.message, err.field);
  if (err instanceof ShuttingDownError) return new GrpcError(Status.UNAVAILABLE, err.message);
  if (err instanceof MismatchedPairError) return new GrpcError(Status.FAILED_PRECONDITION, err.message);
  // The template ran and refused this conversation (e.g. roles that do not alternate).
  if (err instanceof ChatTemplateError) return new GrpcError(Status.INVALID_ARGUMENT, `prompt.chat.messages: ${err.message}`, "prompt.chat.messages");
  return err;
}

export interface RequestStatus {
  code: Status;
  /** The status code's name, e.g. "INVALID_ARGUMENT" (metric labels). */
  codeName: string;
  message: string;
  field: string;
  /** Unrecognised: log it in full, tell the client only that it was internal. */
  internal: boolean;
}

/** The status a request would end with, for RequestError messages, metrics and logs. */
export function requestStatus(err: unknown): RequestStatus {
  const status = toGrpcStatus(asGrpcError(err));
  return {
    code: status.code,
    codeName: statusName(status.code),
    message: status.internal ? "internal error" : status.message,
    field: status.field,
    internal: status.internal,
  };
}

export const statusName = (code: Status): string => Status[code] ?? `CODE_${code}`;
