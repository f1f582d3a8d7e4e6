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
