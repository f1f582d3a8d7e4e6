// `buf breaking` against the contract of the previous main, so that a change to the wire
// format cannot pass unseen. The category is WIRE_JSON (buf.yaml): clients talk binary
// protobuf, and RunConfig is also read as protobuf JSON (run.json, `lightreasoner runs
// start <config.json>`). A break passes only when the same change adds to README.md's
// "Contract changes" list, which says what changed and why.
//
// The base: LIGHTREASONER_CONTRACT_BASE when set (CI may pass the main it merged onto); on a
// branch, where it left the local main; on main itself, HEAD's first parent (the previous
// main). A shallow clone without that commit skips the check and says so in the test's name
// (.ci/run deepens the clone by one commit first).
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const repositoryRoot = fileURLToPath(new URL("../..", import.meta.url));
const buf = join(repositoryRoot, "node_modules", ".bin", "buf");
const scratch = mkdtempSync(join(tmpdir(), "lightreasoner-breaking-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function git(cwd: string, ...args: string[]): string | undefined {
  const result = spawnSync("git", args, { cwd, encoding: "utf8" });
  return result.status === 0 ? result.stdout.trim() : undefined;
}

/** The commit whose contract this tree is held against, or why there is none. */
function contractBase(root: string): { commit?: string; described: string } {
  const named = process.env.LIGHTREASONER_CONTRACT_BASE;
  const head = git(root, "rev-parse", "--verify", "-q", "HEAD^{commit}");
  const main = git(root, "rev-parse", "--verify", "-q", "refs/heads/main^{commit}");
  const [rev, described] = named
    ? [named, `LIGHTREASONER_CONTRACT_BASE (${named})`]
    : main && main !== head
      ? [git(root, "merge-base", "HEAD", main), "where this branch left main"]
      : ["HEAD~1", "the previous main (HEAD~1)"];
  const commit = rev ? git(root, "rev-parse", "--verify", "-q", `${rev}^{commit}`) : undefined;
  return { commit, described: commit ? `${described}, ${commit.slice(0, 12)}` : `${described}: not in this clone (shallow? fetch it or set LIGHTREASONER_CONTRACT_BASE)` };
}

/** README.md's "## Contract changes" section, up to the next section; "" when there is none. */
function contractChanges(readme: string): string {
  const start = readme.indexOf("\n## Contract changes\n");
  if (start < 0) return "";
  const next = readme.indexOf("\n## ", start + 1);
  return readme.slice(start, next < 0 ? undefined : next).trim();
}

/** What buf breaking finds between the contract at `commit` and the working tree, and whether README.md's list changed with it. */
function breakingSince(root: string, commit: string): { breaks: string[]; noted: boolean } {
  const base = mkdtempSync(join(scratch, "base-"));
  const archive = spawnSync("git", ["archive", "--format=tar", "-o", join(base, "contract.tar"), commit, "proto", "buf.yaml"], { cwd: root, encoding: "utf8" });
  if (archive.status !== 0) throw new Error(`git archive ${commit}: ${archive.stderr}`);
  const untar = spawnSync("tar", ["-xf", "contract.tar"], { cwd: base, encoding: "utf8" });
  if (untar.status !== 0) throw new Error(`tar: ${untar.stderr}`);
  const result = spawnSync(buf, ["breaking", "--against", base, "--error-format", "text"], { cwd: root, encoding: "utf8" });
  const breaks = `${result.stdout}${result.stderr}`.split("\n").filter(Boolean);
  // buf exits 100 for breaking changes; anything else non-zero means it could not compare.
  if (result.status !== 0 && result.status !== 100) throw new Error(`buf breaking: ${breaks.join("\n")}`);
  const readmeThen = git(root, "show", `${commit}:README.md`) ?? "";
  const readmeNow = existsSync(join(root, "README.md")) ? readFileSync(join(root, "README.md"), "utf8") : "";
  return { breaks, noted: contractChanges(readmeNow) !== contractChanges(readmeThen) };
}

describe("the contract against the previous main (buf breaking, WIRE_JSON)", () => {
  const base = contractBase(repositoryRoot);
  it.skipIf(!base.commit)(`has no wire or JSON break, or notes it under "Contract changes" in README.md; base: ${base.described}`, () => {
    const { breaks, noted } = breakingSince(repositoryRoot, base.commit!);
    expect(breaks.length === 0 || noted, `${breaks.join("\n")}\nA wire or JSON break: say what changed and why in README.md's "Contract changes" list.`).toBe(true);
  });
});

describe("the breaking check has teeth", () => {
  const identity = ["-c", "user.name=contract test", "-c", "user.email=contract-test@localhost"];
  const repository = () => {
    const root = mkdtempSync(join(scratch, "repo-"));
    cpSync(join(repositoryRoot, "proto"), join(root, "proto"), { recursive: true });
    cpSync(join(repositoryRoot, "buf.yaml"), join(root, "buf.yaml"));
    writeFileSync(join(root, "README.md"), "# x\n\n## Contract changes\n\n- v1.\n\n## Next\n");
    expect(git(root, "init", "-q")).toBeDefined();
    expect(git(root, ...identity, "add", "-A")).toBeDefined();
    expect(git(root, ...identity, "commit", "-q", "-m", "base")).toBeDefined();
    return root;
  };
  const edit = (root: string, file: string, from: string, to: string) => {
    const path = join(root, "proto", "lightreasoner", "v1", file);
    const source = readFileSync(path, "utf8");
    expect(source).toContain(from);
    writeFileSync(path, source.replace(from, to));
  };

  it("sees a field's type change, and lets it pass once README.md's list says so", () => {
    const root = repository();
    edit(root, "common.proto", "uint32 max_new_tokens = 4;", "string max_new_tokens = 4;");
    const before = breakingSince(root, git(root, "rev-parse", "HEAD")!);
    expect(before.breaks.join("\n")).toMatch(/max_new_tokens.*type/);
    expect(before.noted).toBe(false);
    writeFileSync(join(root, "README.md"), "# x\n\n## Contract changes\n\n- v1.\n- max_new_tokens became a string, because...\n\n## Next\n");
    expect(breakingSince(root, git(root, "rev-parse", "HEAD")!).noted).toBe(true);
  });

  it("sees a deleted field even with its number and name reserved (an older client's value would be dropped)", () => {
    const root = repository();
    edit(root, "common.proto", "message Usage {\n", "message Usage {\n  reserved 1;\n  reserved \"prompt_tokens\";\n");
    edit(root, "common.proto", "  // Tokens in the encoded prompt.\n  uint32 prompt_tokens = 1;\n", "");
    expect(breakingSince(root, git(root, "rev-parse", "HEAD")!).breaks.join("\n")).toMatch(/"prompt_tokens".*deleted/);
  });

  it("sees a renamed field (the JSON name changes) but not a new one", () => {
    const root = repository();
    edit(root, "common.proto", "uint32 prompt_tokens = 1;", "uint32 prompt_token_count = 1;");
    expect(breakingSince(root, git(root, "rev-parse", "HEAD")!).breaks.join("\n")).toMatch(/prompt_tokens/);
    const other = repository();
    edit(other, "common.proto", "uint32 completion_tokens = 2;", "uint32 completion_tokens = 2;\n  // Tokens served from a prefix cache.\n  uint32 cached_tokens = 3;");
    expect(breakingSince(other, git(other, "rev-parse", "HEAD")!).breaks).toEqual([]);
  });
});
