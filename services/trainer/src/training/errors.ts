// Typed errors of the training side. Each names what was wrong (a config field, a
// trajectory's field, a checkpoint file) so the CLI prints one actionable line and the gRPC
// boundary can map them: bad settings and bad trajectories are the caller's input
// (INVALID_ARGUMENT), a damaged checkpoint is a malformed file (ModelFormatError).
import { ModelFormatError } from "#core/model/errors.ts";

/** A training setting is missing, out of range, or contradicts another; `field` is its path. */
export class TrainingConfigError extends Error {
  constructor(
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${field}: ${problem}`);
    this.name = "TrainingConfigError";
  }
}

/** A trajectory handed to a trainer is malformed; `field` is e.g. `trajectories[3].targets[0].ids`. */
export class TrajectoryError extends Error {
  constructor(
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${field}: ${problem}`);
    this.name = "TrajectoryError";
  }
}

/** A checkpoint on disk is incomplete, damaged, or belongs to another run. */
export class CheckpointError extends ModelFormatError {
  constructor(file: string, problem: string) {
    super(file, problem);
    this.name = "CheckpointError";
  }
}
