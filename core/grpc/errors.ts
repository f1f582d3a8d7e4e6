// The one place where errors become gRPC status codes. Handlers throw typed errors where
// they arise (GrpcError, the model and file errors of core/model/errors.ts, zod validation
// errors, file-system errors); the adapter turns each into a status with a message a client
// can act on. Anything unrecognised is an INTERNAL error whose details stay in the server log.
import { status as Status } from "@grpc/grpc-js";
import { z } from "zod";
import { ModelFormatError, UnsupportedModelError } from "#core/model/errors.ts";

export { Status };

/** An error that already knows its status code; `field` names the offending request field. */
export class GrpcError extends Error {
  constructor(
    readonly code: Status,
    message: string,
    readonly field = "",
  ) {
    super(message);
    this.name = "GrpcError";
  }

  /** The status code's name, e.g. "INVALID_ARGUMENT". */
  get codeName(): string {
    return Status[this.code] ?? `code ${this.code}`;
  }
}

/** A request field is missing or out of range: INVALID_ARGUMENT with the field named. */
export function invalidArgument(field: string, problem: string): GrpcError {
  return new GrpcError(Status.INVALID_ARGUMENT, `${field}: ${problem}`, field);
}

export interface GrpcStatus {
  code: Status;
  message: string;
  /** Path of the offending request field, or "" when the problem is not tied to one. */
  field: string;
  /** True when the error was not recognised: log it, and do not show its message to clients. */
  internal: boolean;
}

const FILE_SYSTEM_CODES: Record<string, Status> = {
  ENOENT: Status.NOT_FOUND,
  ENOTDIR: Status.NOT_FOUND,
  EACCES: Status.PERMISSION_DENIED,
  EPERM: Status.PERMISSION_DENIED,
};

/** Maps any thrown value to the status a client should see. */
export function toGrpcStatus(err: unknown): GrpcStatus {
  const known = (code: Status, message: string, field = ""): GrpcStatus => ({ code, message, field, internal: false });
  if (err instanceof GrpcError) return known(err.code, err.message, err.field);
  // A file the client supplied (an adapter, a problems file) is malformed.
  if (err instanceof ModelFormatError) return known(Status.INVALID_ARGUMENT, err.message);
  // Well-formed, but this server cannot use it with what it serves.
  if (err instanceof UnsupportedModelError) return known(Status.FAILED_PRECONDITION, err.message);
  if (err instanceof z.core.$ZodError) {
    const issues = err.issues.map((issue) => `${issue.path.join(".") || "(root)"}: ${issue.message}`);
    return known(Status.INVALID_ARGUMENT, issues.join("; "), err.issues[0]?.path.join(".") ?? "");
  }
  if (err instanceof Error) {
    if (err.name === "AbortError") return known(Status.CANCELLED, err.message);
    if (err.name === "TimeoutError") return known(Status.DEADLINE_EXCEEDED, err.message);
    const errno = (err as NodeJS.ErrnoException).code;
    if (errno !== undefined && errno in FILE_SYSTEM_CODES) return known(FILE_SYSTEM_CODES[errno], err.message);
  }
  const message = err instanceof Error ? err.message : String(err);
  return { code: Status.INTERNAL, message, field: "", internal: true };
}

