// The typed error for a bad line in a problems file. It is a ModelFormatError (the shared
// "data file on disk is malformed" error) so the gRPC boundary maps it like any other bad
// file, and it carries the line and field so a person can go straight to the fix.
import { ModelFormatError } from "../model/errors.ts";

export class ProblemFileError extends ModelFormatError {
  constructor(
    file: string,
    readonly line: number,
    readonly field: string | null,
    readonly detail: string,
  ) {
    super(file, field === null ? detail : `"${field}" ${detail}`);
    // The shared message is "file: problem"; a line number reads better as "file:17: ...".
    this.message = `${file}:${line}: ${field === null ? "" : `"${field}" `}${detail}`;
    this.name = "ProblemFileError";
  }
}
