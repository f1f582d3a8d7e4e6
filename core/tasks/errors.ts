// The typed error for a bad line in a problems file. It is a ModelFormatError (the shared
// "data file on disk is malformed" error) so the gRPC boundary maps it like any other bad
// file, and it carries the line and field so a person can go straight to the fix.
import { JsonLineError } from "#core/model/errors.ts";

export class ProblemFileError extends JsonLineError {
  override name = "ProblemFileError";
}
