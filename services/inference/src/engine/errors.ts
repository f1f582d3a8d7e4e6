// What the engine refuses, typed by cause. The gRPC boundary (server/status.ts) maps each
// class to one status code; nothing below the boundary knows about gRPC.

/** The request itself is wrong; `field` names the offending request field. */
export class InvalidRequestError extends Error {
  constructor(
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${field}: ${problem}`);
    this.name = "InvalidRequestError";
  }
}

/** The server is at a configured limit (streams, queue, adapter size); retrying later may work. */
export class CapacityError extends Error {
  constructor(
    message: string,
    readonly field = "",
  ) {
    super(message);
    this.name = "CapacityError";
  }
}

/** The request is valid but cannot run against what is served (no weights for adapters, no chat template, an adapter that does not fit). */
export class PreconditionError extends Error {
  constructor(
    message: string,
    readonly field = "",
  ) {
    super(message);
    this.name = "PreconditionError";
  }
}

/** A named thing (adapter version, directory) does not exist. */
export class NotFoundError extends Error {
  constructor(
    message: string,
    readonly field = "",
  ) {
    super(message);
    this.name = "NotFoundError";
  }
}

/** A path the client named lies outside what the server was told it may read. */
export class PermissionDeniedError extends Error {
  constructor(
    message: string,
    readonly field = "",
  ) {
    super(message);
    this.name = "PermissionDeniedError";
  }
}

/** The server is shutting down and takes no new work; another replica may. */
export class ShuttingDownError extends Error {
  constructor(message = "the server is shutting down and accepts no new requests") {
    super(message);
    this.name = "ShuttingDownError";
  }
}

/** Expert and amateur cannot be served together; the message lists every difference. */
export class MismatchedPairError extends Error {
  constructor(readonly differences: string[]) {
    super(`expert and amateur do not share a tokenizer: ${differences.join("; ")}`);
    this.name = "MismatchedPairError";
  }
}
