// The typed error for a bad argument to the method's math (alpha out of range, arrays of
// different vocabularies, NaN logits). It is a RangeError so plain callers can catch it as
// one, and it names the parameter so the gRPC boundary can report INVALID_ARGUMENT exactly.

export class MethodInputError extends RangeError {
  constructor(
    readonly parameter: string,
    readonly problem: string,
  ) {
    super(`${parameter}: ${problem}`);
    this.name = "MethodInputError";
  }
}
