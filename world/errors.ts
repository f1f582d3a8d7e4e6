// The typed error for a bad setting of the built-in world (a difficulty knob out of range, a
// request for more distinct problems than the settings allow). It is a RangeError that names
// the setting, so the CLI and the gRPC boundary can report it as an invalid argument.

export class WorldConfigError extends RangeError {
  constructor(
    readonly setting: string,
    readonly problem: string,
  ) {
    super(`${setting}: ${problem}`);
    this.name = "WorldConfigError";
  }
}
