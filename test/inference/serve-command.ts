// A `lightreasoner`-shaped program holding only the `serve` command, so the serve-cli test
// runs the real command (flags, logs, signals) whether or not cli/main.ts registers it yet.
import { Command } from "commander";
import { registerServe } from "#cli/commands/serve-inference.ts";

const program = new Command().name("lightreasoner");
registerServe(program);
await program.parseAsync(process.argv);
