// The contract's own checks: buf lint (STANDARD naming plus COMMENTS, so every element is
// documented), buf format, and that core/gen is exactly what `npm run generate` writes, so
// generated code is never edited by hand.
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("../..", import.meta.url));
const buf = join(root, "node_modules", ".bin", "buf");
const scratch = mkdtempSync(join(tmpdir(), "lightreasoner-contract-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function run(command: string, args: string[], cwd = root) {
  const result = spawnSync(command, args, { cwd, encoding: "utf8" });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

/** Every file under `dir`, as paths relative to it, sorted. */
function listFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath, entry.name)))
    .sort();
}

describe("the .proto contract", () => {
  it("passes buf lint", () => {
    const { status, output } = run(buf, ["lint"]);
    expect(output).toBe("");
    expect(status).toBe(0);
  });

  it("is formatted as buf format writes it", () => {
    const { status, output } = run(buf, ["format", "--diff", "--exit-code"]);
    expect(output).toBe("");
    expect(status).toBe(0);
  });

  it("lint fails on an undocumented field (the check has teeth)", () => {
    const copy = join(scratch, "undocumented");
    cpSync(join(root, "proto"), join(copy, "proto"), { recursive: true });
    cpSync(join(root, "buf.yaml"), join(copy, "buf.yaml"));
    const file = join(copy, "proto", "lightreasoner", "v1", "common.proto");
    const source = readFileSync(file, "utf8");
    const stripped = source.replace("  // Who speaks this turn.\n", "");
    expect(stripped).not.toBe(source);
    writeFileSync(file, stripped);
    const { status, output } = run(buf, ["lint"], copy);
    expect(status).not.toBe(0);
    expect(output).toContain('Field "role" should have a non-empty comment');
  });
});

describe("generated code (core/gen)", () => {
  it("is exactly what the generator writes, byte for byte", () => {
    const out = join(scratch, "generated");
    const { status, output } = run(process.execPath, [join(root, "scripts", "generate.mjs"), out]);
    expect(status, output).toBe(0);
    const committed = join(root, "core", "gen");
    const fresh = join(out, "core", "gen");
    const files = listFiles(fresh);
    expect(files.length).toBeGreaterThan(0);
    expect(listFiles(committed)).toEqual(files);
    for (const file of files) {
      expect(readFileSync(join(committed, file), "utf8"), `core/gen/${file} differs: run npm run generate`).toBe(readFileSync(join(fresh, file), "utf8"));
    }
  });
});
