// Errors of the run manager, each already carrying the gRPC status the contract promises
// (trainer.proto): a bad configuration field is INVALID_ARGUMENT naming the field, an unknown
// run NOT_FOUND, a taken id ALREADY_EXISTS, an action the run's state forbids
// FAILED_PRECONDITION, a run beyond the trainer's bound on runs at once RESOURCE_EXHAUSTED.
import { GrpcError, Status } from "#core/grpc/adapter.ts";

/** A RunConfig field is missing, out of range or contradicts another; `field` is its proto path. */
export class RunConfigError extends GrpcError {
  constructor(field: string, problem: string) {
    super(Status.INVALID_ARGUMENT, `${field}: ${problem}`, field);
    this.name = "RunConfigError";
  }
}

export class RunNotFoundError extends GrpcError {
  constructor(runId: string) {
    super(Status.NOT_FOUND, `no run with id ${JSON.stringify(runId)}`, "run_id");
    this.name = "RunNotFoundError";
  }
}

export class RunExistsError extends GrpcError {
  constructor(runId: string) {
    super(Status.ALREADY_EXISTS, `a run with id ${JSON.stringify(runId)} already exists`, "run_id");
    this.name = "RunExistsError";
  }
}

/** As many runs are running as the trainer runs at once; asking again after one ends may succeed. */
export class RunCapacityError extends GrpcError {
  constructor(running: readonly string[], maxConcurrentRuns: number) {
    super(
      Status.RESOURCE_EXHAUSTED,
      `this trainer runs at most ${maxConcurrentRuns} run${maxConcurrentRuns === 1 ? "" : "s"} at once and ${running.join(", ")} ${running.length === 1 ? "is" : "are"} running; ` +
        `start it when one ends (or cancel one), or give the trainer a higher --max-runs if its memory allows`,
    );
    this.name = "RunCapacityError";
  }
}

/** The run (or another one) is in a state that forbids the action. */
export class RunStateError extends GrpcError {
  constructor(message: string) {
    super(Status.FAILED_PRECONDITION, message);
    this.name = "RunStateError";
  }
}
