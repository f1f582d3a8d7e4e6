// Flag parsers shared by subcommands, so every numeric flag fails the same clear way.
import { InvalidArgumentError } from "commander";

export function parseIntegerOption(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n)) throw new InvalidArgumentError(`${flag} must be an integer, got "${value}"`);
    return n;
  };
}

export function parseNumberOption(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n)) throw new InvalidArgumentError(`${flag} must be a number, got "${value}"`);
    return n;
  };
}

/** A flag combination that parsing alone cannot reject (reported as one line, exit 1). */
export class UsageError extends Error {
  override name = "UsageError";
}
