// The one flag reader of the standalone bench scripts (decode-profile, decode-step, footprint, gc-threads,
// score-footprint, stream-memory), run with tsx outside the CLI: `--name value`, or the fallback.
import { BenchInputError } from "./stats.ts";

export function option(args: readonly string[], name: string, fallback: string): string {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
}

/** `--name <n>` as a positive integer, or the fallback; anything else is refused naming the flag. */
export function positiveInteger(args: readonly string[], name: string, fallback: number): number {
  const value = Number(option(args, name, String(fallback)));
  if (!Number.isInteger(value) || value < 1) throw new BenchInputError(name, `must be a positive integer, got ${option(args, name, "")}`);
  return value;
}

/** `--prefill-batch-tokens <n>` for the service the script starts: undefined when absent, refused before starting it unless a positive integer. */
export function prefillBatchTokensOption(args: readonly string[]): number | undefined {
  if (!args.includes("--prefill-batch-tokens")) return undefined;
  const tokens = Number(option(args, "--prefill-batch-tokens", ""));
  if (!(Number.isInteger(tokens) && tokens > 0)) throw new Error("--prefill-batch-tokens needs a positive integer");
  return tokens;
}
