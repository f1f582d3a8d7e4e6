// Typed errors of the sample store and the sample files it imports. A malformed line is a
// ModelFormatError (a data file on disk is wrong: INVALID_ARGUMENT at the gRPC boundary)
// naming the file and line; a store written under other settings, or a problem stored twice,
// is an UnsupportedModelError (well-formed but unusable here: FAILED_PRECONDITION).
import { JsonLineError, UnsupportedModelError } from "#core/model/errors.ts";

/** One line of a sample store or sample file is malformed; `line` is 1-based. */
export class SampleFileError extends JsonLineError {
  override name = "SampleFileError";
}

/** The store on disk was written by a run with different settings (beta, seed, expert...). */
export class StoreSettingsMismatchError extends UnsupportedModelError {
  constructor(
    file: string,
    readonly differences: string[],
  ) {
    super(file, `was written with other settings, so its samples cannot be continued: ${differences.join("; ")}`);
    this.name = "StoreSettingsMismatchError";
  }
}

/** A problem is already in the store: storing it again would count its samples twice. */
export class DuplicateProblemError extends UnsupportedModelError {
  constructor(
    file: string,
    readonly problemId: string,
  ) {
    super(file, `problem ${problemId} is already stored; a problem is stored once`);
    this.name = "DuplicateProblemError";
  }
}
