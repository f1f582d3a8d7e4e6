// The one flag reader of the standalone bench scripts (decode-profile, decode-step, footprint,
// stream-memory), run with tsx outside the CLI: `--name value`, or the fallback.
export function option(args: readonly string[], name: string, fallback: string): string {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
}
