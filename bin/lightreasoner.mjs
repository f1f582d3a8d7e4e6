#!/usr/bin/env node
// The `lightreasoner` binary: runs the TypeScript CLI through tsx's loader, so there is no
// separate build step between a checkout and a working command.
import { register } from "tsx/esm/api";

register();
await import("#cli/main.ts");
