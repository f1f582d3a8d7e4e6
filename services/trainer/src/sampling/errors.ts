// Typed errors of talking to the inference endpoints. Each is a GrpcError that already knows
// its status code, so the trainer's gRPC boundary (toGrpcStatus) reports it as the contract
// says: an unreachable endpoint UNAVAILABLE, an expert that differs FAILED_PRECONDITION, a
// bad setting INVALID_ARGUMENT naming the field.
import { GrpcError, Status } from "#core/grpc/errors.ts";

/** An endpoint did not answer (connection refused, name not resolved, no reply in time). */
export class EndpointUnreachableError extends GrpcError {
  constructor(
    readonly endpoint: string,
    readonly reason: string,
  ) {
    super(Status.UNAVAILABLE, `inference endpoint ${endpoint} is unreachable: ${reason}`);
    this.name = "EndpointUnreachableError";
  }
}

/** An endpoint serves an expert other than the trainer's (compared by model fingerprint). */
export class FingerprintMismatchError extends GrpcError {
  constructor(
    readonly endpoint: string,
    readonly trainerFingerprint: string,
    readonly endpointFingerprint: string,
    readonly expertDir: string | null,
  ) {
    super(
      Status.FAILED_PRECONDITION,
      `inference endpoint ${endpoint} serves an expert with fingerprint ${endpointFingerprint}, but the trainer's expert` +
        `${expertDir ? ` ${expertDir}` : ""} has fingerprint ${trainerFingerprint}; an adapter trained on one would not fit the other, ` +
        `so point the trainer and the inference service at the same expert`,
    );
    this.name = "FingerprintMismatchError";
  }
}

/** Two endpoints serve different expert/amateur pairs, so their samples would not mix. */
export class EndpointMismatchError extends GrpcError {
  constructor(
    readonly endpoint: string,
    readonly reference: string,
    readonly differences: string[],
  ) {
    super(Status.FAILED_PRECONDITION, `inference endpoint ${endpoint} does not serve what ${reference} serves: ${differences.join("; ")}`);
    this.name = "EndpointMismatchError";
  }
}

/** Every endpoint stayed down for too long; the problems not yet stored can be resumed later. */
export class EndpointsExhaustedError extends GrpcError {
  constructor(readonly failures: { endpoint: string; reason: string }[], downForMs: number) {
    super(
      Status.UNAVAILABLE,
      `no inference endpoint answered for ${Math.round(downForMs / 1000)} s (${failures.map((f) => `${f.endpoint}: ${f.reason}`).join("; ")}); ` +
        `the finished problems are stored and the run can be resumed`,
    );
    this.name = "EndpointsExhaustedError";
  }
}

/** A request the endpoints refuse for a reason retrying will not fix (a prompt too long, a bad setting). */
export class RequestRefusedError extends GrpcError {
  constructor(
    code: Status,
    readonly problemId: string,
    readonly endpoint: string,
    detail: string,
    field = "",
  ) {
    super(code, `problem ${problemId} was refused by ${endpoint}: ${detail}`, field);
    this.name = "RequestRefusedError";
  }
}

/** A sampling or evaluation setting is out of range; `field` names it as the run config does. */
export class SamplerConfigError extends GrpcError {
  constructor(field: string, problem: string) {
    super(Status.INVALID_ARGUMENT, `${field}: ${problem}`, field);
    this.name = "SamplerConfigError";
  }
}

/**
 * A replica answered a request that named its adapter with another one: it does not honour
 * AdapterSelection, so what a run samples or measures would depend on what others activate.
 */
export class AdapterIgnoredError extends GrpcError {
  constructor(
    readonly endpoint: string,
    what: string,
    readonly pinned: string,
    readonly served: string,
  ) {
    const name = (version: string) => (version === "" ? "the base expert" : `adapter ${version}`);
    super(
      Status.FAILED_PRECONDITION,
      `inference endpoint ${endpoint} answered ${what} with ${name(served)}, but the request named ${name(pinned)}; ` +
        `the endpoint does not honour the request's adapter field (AdapterSelection), so it cannot serve runs that share it`,
    );
    this.name = "AdapterIgnoredError";
  }
}
