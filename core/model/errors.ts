// Typed errors for everything that reads a model, an adapter or a data file from disk.
// They carry the file and the problem so a caller (CLI or gRPC boundary) can report them
// without digging; the gRPC layer maps them to status codes in one place.

/** A file on disk is missing, malformed, or does not fit what it claims to describe. */
export class ModelFormatError extends Error {
  constructor(
    readonly file: string,
    readonly problem: string,
  ) {
    super(`${file}: ${problem}`);
    this.name = "ModelFormatError";
  }
}

/** The input is well-formed but not something this project supports (e.g. a model_type). */
export class UnsupportedModelError extends Error {
  constructor(
    readonly file: string,
    readonly problem: string,
  ) {
    super(`${file}: ${problem}`);
    this.name = "UnsupportedModelError";
  }
}

/** One line of a JSON-lines file is malformed; `line` is 1-based, `field` the offending key. */
export class JsonLineError extends ModelFormatError {
  constructor(
    file: string,
    readonly line: number,
    readonly field: string | null,
    readonly detail: string,
  ) {
    super(file, field === null ? detail : `"${field}" ${detail}`);
    // The shared message is "file: problem"; a line number reads better as "file:17: ...".
    this.message = `${file}:${line}: ${field === null ? "" : `"${field}" `}${detail}`;
    this.name = "JsonLineError";
  }
}
