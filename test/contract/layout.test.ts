// The layout as a checkable rule (ARCHITECTURE.md draws it): every import names a room
// (#core/..., #trainer/...) or a file in the same folder, never `../`; no import circles,
// type-only imports included; and floors without back-arrows: bin -> cli -> bench ->
// services and world -> core, where the two services and world never import each other (the
// services meet only through the contract, core/gen). Tests, under test/ or beside the code
// as *.test.ts, stand above every floor. The graph is read from the import specifiers with
// TypeScript's own pre-processor, so comments and strings are not mistaken for imports.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { afterAll, describe, expect, it } from "vitest";

const repositoryRoot = fileURLToPath(new URL("../..", import.meta.url));
const SOURCE = /\.(ts|mts|cts|mjs|js)$/;
/** Folders that hold no project source: dependencies anywhere, and run output at the root (.gitignore). */
const skipped = (dir: string, name: string) => name === "node_modules" || name.startsWith(".") || (dir === "" && (name === "runs" || name === "tmp"));

/** Each room on its floor; a file may import its own room or a room on a lower floor. */
const FLOORS: Record<string, number> = {
  bin: 5,
  cli: 4,
  bench: 3,
  "services/inference": 2,
  "services/trainer": 2,
  world: 2,
  core: 1,
};
const TEST_FLOOR = 6;

interface Layout {
  /** Repository-relative paths with "/" separators. */
  files: string[];
  /** file -> the files it imports (resolved, in the project). */
  imports: Map<string, string[]>;
  /** Imports that climb with `../`, as "file: specifier". */
  climbing: string[];
  /** Room or relative imports that name no file in the project, as "file: specifier". */
  unresolved: string[];
}

function sourceFiles(root: string, dir = ""): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true }).flatMap((entry) => {
    const path = dir ? `${dir}/${entry.name}` : entry.name;
    if (entry.isDirectory()) return skipped(dir, entry.name) ? [] : sourceFiles(root, path);
    return entry.isFile() && SOURCE.test(entry.name) && !entry.name.endsWith(".d.ts") ? [path] : [];
  });
}

/** The package.json "imports" map as prefix pairs: "#core/" -> "core/". */
function roomPrefixes(root: string): [string, string][] {
  const { imports } = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { imports: Record<string, string> };
  return Object.entries(imports).map(([from, to]) => {
    if (!from.endsWith("/*") || !to.endsWith("/*")) throw new Error(`package.json imports: ${from} -> ${to} is not a folder pattern`);
    return [from.slice(0, -1), normalize(to.slice(0, -1)).split(sep).join("/")];
  });
}

function readLayout(root: string): Layout {
  const files = sourceFiles(root).sort();
  const known = new Set(files);
  const rooms = roomPrefixes(root);
  const layout: Layout = { files, imports: new Map(), climbing: [], unresolved: [] };
  for (const file of files) {
    const targets: string[] = [];
    for (const { fileName: specifier } of ts.preProcessFile(readFileSync(join(root, file), "utf8"), true, true).importedFiles) {
      if (specifier.startsWith("../")) layout.climbing.push(`${file}: ${specifier}`);
      let target: string | undefined;
      if (specifier.startsWith("#")) {
        const room = rooms.find(([prefix]) => specifier.startsWith(prefix));
        target = room ? room[1] + specifier.slice(room[0].length) : undefined;
      } else if (specifier.startsWith(".")) {
        target = normalize(join(dirname(file), specifier)).split(sep).join("/");
      } else {
        continue; // node: built-ins and packages are outside the layout
      }
      if (target === undefined || !known.has(target)) layout.unresolved.push(`${file}: ${specifier}`);
      else targets.push(target);
    }
    layout.imports.set(file, targets);
  }
  return layout;
}

/** Every import circle: the strongly connected components with more than one file, or a file importing itself (Tarjan). */
function importCircles(layout: Layout): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const circles: string[][] = [];
  const visit = (file: string) => {
    index.set(file, index.size);
    low.set(file, index.get(file)!);
    stack.push(file);
    onStack.add(file);
    for (const next of layout.imports.get(file) ?? []) {
      if (!index.has(next)) {
        visit(next);
        low.set(file, Math.min(low.get(file)!, low.get(next)!));
      } else if (onStack.has(next)) {
        low.set(file, Math.min(low.get(file)!, index.get(next)!));
      }
    }
    if (low.get(file) !== index.get(file)) return;
    const component: string[] = [];
    let member: string;
    do {
      member = stack.pop()!;
      onStack.delete(member);
      component.push(member);
    } while (member !== file);
    if (component.length > 1 || layout.imports.get(file)!.includes(file)) circles.push(component.sort());
  };
  for (const file of layout.files) if (!index.has(file)) visit(file);
  return circles;
}

/** The room a file belongs to, and its floor; tests (test/, *.test.ts) are above every floor. */
function roomOf(file: string): { room: string; floor: number } {
  if (file.startsWith("test/") || /\.test\.[cm]?ts$/.test(file)) return { room: "test", floor: TEST_FLOOR };
  const parts = file.split("/");
  const room = parts[0] === "services" ? `services/${parts[1]}` : parts[0];
  return { room, floor: FLOORS[room] ?? 0 };
}

/** Imports that run back up a floor or sideways between rooms of one floor. */
function backArrows(layout: Layout): string[] {
  const broken: string[] = [];
  for (const [file, targets] of layout.imports) {
    const from = roomOf(file);
    if (from.floor === 0) continue; // scripts/, deploy/ and root configs stand outside the floors
    for (const target of targets) {
      const to = roomOf(target);
      if (to.room === from.room) continue;
      if (to.floor === 0 || to.floor >= from.floor) broken.push(`${file} (${from.room}) -> ${target} (${to.room})`);
    }
  }
  return broken;
}

describe("the project's layout", () => {
  const layout = readLayout(repositoryRoot);

  it("reads the whole tree", () => {
    for (const room of ["bin/", "cli/", "bench/", "services/inference/", "services/trainer/", "world/", "core/", "test/"]) {
      expect(layout.files.some((f) => f.startsWith(room)), room).toBe(true);
    }
    expect(layout.unresolved).toEqual([]);
  });

  it("has no import that climbs with ../", () => {
    expect(layout.climbing).toEqual([]);
  });

  it("has no import circles", () => {
    expect(importCircles(layout)).toEqual([]);
  });

  it("imports only downwards: bin -> cli -> bench -> services, world -> core", () => {
    expect(backArrows(layout)).toEqual([]);
  });
});

describe("the layout checks have teeth", () => {
  const scratch = mkdtempSync(join(tmpdir(), "lightreasoner-layout-"));
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));
  const tree = (files: Record<string, string>) => {
    const root = mkdtempSync(join(scratch, "tree-"));
    const imports = { "#core/*": "./core/*", "#inference/*": "./services/inference/src/*", "#trainer/*": "./services/trainer/src/*", "#cli/*": "./cli/*" };
    writeFileSync(join(root, "package.json"), JSON.stringify({ imports }));
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(dirname(join(root, path)), { recursive: true });
      writeFileSync(join(root, path), text);
    }
    return readLayout(root);
  };

  it("finds a circle made of a type-only import and a value import", () => {
    const layout = tree({
      "services/trainer/src/report/a.ts": 'import type { B } from "./b.ts";\nexport const a = 1;\n',
      "services/trainer/src/report/b.ts": 'import { a } from "#trainer/report/a.ts";\nexport type B = typeof a;\n',
      "services/trainer/src/report/c.ts": 'import { a } from "./a.ts";\n',
    });
    expect(importCircles(layout)).toEqual([["services/trainer/src/report/a.ts", "services/trainer/src/report/b.ts"]]);
  });

  it("finds a climbing import, an unresolved one, and ignores one in a comment", () => {
    const layout = tree({
      "core/x.ts": "export const x = 1;\n",
      "services/inference/src/server/y.ts": '// import "../../../../cli/z.ts";\nimport { x } from "../../../../core/x.ts";\nimport "#core/missing.ts";\n',
    });
    expect(layout.climbing).toEqual(["services/inference/src/server/y.ts: ../../../../core/x.ts"]);
    expect(layout.unresolved).toEqual(["services/inference/src/server/y.ts: #core/missing.ts"]);
  });

  it("finds a back-arrow up a floor and a sideways arrow between the services, but lets tests import anything", () => {
    const layout = tree({
      "cli/main.ts": "export const main = 1;\n",
      "core/math/kl.ts": 'import { main } from "#cli/main.ts";\n',
      "services/inference/src/engine.ts": "export const engine = 1;\n",
      "services/trainer/src/feed.ts": 'import { engine } from "#inference/engine.ts";\n',
      "services/trainer/src/feed.test.ts": 'import { main } from "#cli/main.ts";\nimport { engine } from "#inference/engine.ts";\n',
    });
    expect(backArrows(layout).sort()).toEqual([
      "core/math/kl.ts (core) -> cli/main.ts (cli)",
      "services/trainer/src/feed.ts (services/trainer) -> services/inference/src/engine.ts (services/inference)",
    ]);
  });
});
