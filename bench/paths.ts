// Where the benchmark finds the repository's own files (the built-in models, the CLI entry),
// whatever directory it is started from.
import { fileURLToPath } from "node:url";

export const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));
export const CLI_ENTRY = fileURLToPath(new URL("../bin/lightreasoner.mjs", import.meta.url));
