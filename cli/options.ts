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

export function parsePortOption(flag: string) {
  return (value: string): number => {
    const n = parseIntegerOption(flag)(value);
    if (n < 0 || n > 65535) throw new InvalidArgumentError(`${flag} must be in [0, 65535], got ${n}`);
    return n;
  };
}

export function parseFolderOption(flag: string) {
  return (value: string): string => {
    if (value.trim() === "") throw new InvalidArgumentError(`${flag} must name a folder, got an empty value`);
    return value;
  };
}

/** A comma-separated list, blanks dropped ("a:1, b:2" -> ["a:1", "b:2"]). */
export const parseListOption = (value: string): string[] => value.split(",").map((t) => t.trim()).filter(Boolean);

/** A flag combination that parsing alone cannot reject (reported as one line, exit 1). */
export class UsageError extends Error {
  override name = "UsageError";
}
