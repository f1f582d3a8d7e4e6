#!/usr/bin/env node
// Regenerates core/gen/ from proto/ with buf and protoc-gen-es, both from node_modules, so
// the output depends only on the locked package versions. `node scripts/generate.mjs DIR`
// writes under DIR instead of the repository (DIR/core/gen), which the contract test uses
// to check that the committed code is exactly what the generator writes.
import { spawnSync } from "node:child_process";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const bin = join(root, "node_modules", ".bin");
const outputBase = process.argv[2] ? resolve(process.argv[2]) : root;

const result = spawnSync(join(bin, "buf"), ["generate", "--template", "buf.gen.yaml", "--output", outputBase], {
  cwd: root,
  stdio: "inherit",
  env: { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ""}` },
});
if (result.error) throw result.error;
process.exit(result.status ?? 1);
