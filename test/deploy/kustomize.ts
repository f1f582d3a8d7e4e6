// Renders deploy/k8s kustomizations without kubectl, for the tests: the subset of kustomize
// the manifests use (resources, JSON 6902 patches with a target, images) and nothing else.
// A kustomization field or patch form outside that subset is refused by name rather than
// ignored, so a manifest can never pass here while meaning something else to kustomize; where
// kubectl is installed, a test checks both render the same objects.
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { parseAllDocuments } from "yaml";

export type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; [k: string]: unknown }; [k: string]: unknown };

/** One rendered object and the file it came from (for messages). */
export interface Rendered {
  source: string;
  object: K8sObject;
}

export class KustomizeError extends Error {
  constructor(
    readonly file: string,
    readonly field: string,
    problem: string,
  ) {
    super(`${file}: ${field}: ${problem}`);
    this.name = "KustomizeError";
  }
}

const SUPPORTED_FIELDS = new Set(["apiVersion", "kind", "resources", "patches", "images"]);
const KUSTOMIZATION_FILES = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

interface PatchTarget {
  group?: string;
  version?: string;
  kind?: string;
  name?: string;
}

type Op = { op: string; path: string; value?: unknown; from?: string };

/** Every object the kustomization in `dir` produces, in resource order. */
export function renderKustomization(dir: string, root = process.cwd()): Rendered[] {
  const file = KUSTOMIZATION_FILES.map((f) => join(dir, f)).find((f) => existsSync(f));
  const shown = (path: string) => relative(root, path) || path;
  if (!file) throw new KustomizeError(shown(dir), "kustomization", "no kustomization.yaml in this directory");
  const where = shown(file);
  const docs = parseYamlDocuments(readFileSync(file, "utf8"), where);
  if (docs.length !== 1 || !isRecord(docs[0])) throw new KustomizeError(where, "(document)", "must hold exactly one mapping");
  const k = docs[0];
  for (const field of Object.keys(k)) {
    if (!SUPPORTED_FIELDS.has(field)) throw new KustomizeError(where, field, "is not supported by this renderer (supported: resources, patches, images)");
  }
  if (k.kind !== "Kustomization") throw new KustomizeError(where, "kind", `must be Kustomization, got ${JSON.stringify(k.kind)}`);

  const out: Rendered[] = [];
  for (const [i, entry] of list(k.resources, where, "resources").entries()) {
    if (typeof entry !== "string") throw new KustomizeError(where, `resources[${i}]`, "must be a path");
    const path = resolve(dir, entry);
    if (!existsSync(path)) throw new KustomizeError(where, `resources[${i}]`, `${entry} does not exist`);
    if (statSync(path).isDirectory()) out.push(...renderKustomization(path, root));
    else out.push(...readManifests(path, root));
  }
  const seen = new Set<string>();
  for (const r of out) {
    const id = objectId(r.object);
    if (seen.has(id)) throw new KustomizeError(where, "resources", `${id} is defined twice (again in ${r.source})`);
    seen.add(id);
  }
  for (const [i, image] of list(k.images, where, "images").entries()) applyImage(out, image, where, `images[${i}]`);
  for (const [i, patch] of list(k.patches, where, "patches").entries()) applyPatch(out, patch, dir, where, `patches[${i}]`);
  return out;
}

/** The objects of a multi-document manifest file (empty documents skipped). */
export function readManifests(path: string, root = process.cwd()): Rendered[] {
  const source = relative(root, path) || path;
  return parseYamlDocuments(readFileSync(path, "utf8"), source)
    .filter((doc) => doc !== null)
    .map((doc, i) => {
      if (!isRecord(doc) || typeof doc.apiVersion !== "string" || typeof doc.kind !== "string" || !isRecord(doc.metadata) || typeof doc.metadata.name !== "string") {
        throw new KustomizeError(source, `document ${i + 1}`, "is not a Kubernetes object (apiVersion, kind and metadata.name are required)");
      }
      return { source, object: doc as K8sObject };
    });
}

export function objectId(o: K8sObject): string {
  return `${o.apiVersion}/${o.kind}/${o.metadata.name}`;
}

function parseYamlDocuments(text: string, where: string): unknown[] {
  return parseAllDocuments(text).map((doc, i) => {
    if (doc.errors.length > 0) throw new KustomizeError(where, `document ${i + 1}`, doc.errors[0].message);
    return doc.toJS();
  });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function list(value: unknown, where: string, field: string): unknown[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new KustomizeError(where, field, "must be a list");
  return value;
}

// ---------------------------------------------------------------------------------------
// images: a new name, tag or digest for every container image of that name.

function applyImage(objects: Rendered[], image: unknown, where: string, field: string): void {
  if (!isRecord(image) || typeof image.name !== "string") throw new KustomizeError(where, field, "needs a name");
  for (const key of Object.keys(image)) {
    if (!["name", "newName", "newTag", "digest"].includes(key)) throw new KustomizeError(where, `${field}.${key}`, "is not supported");
  }
  let matched = 0;
  for (const { object } of objects) {
    for (const container of podContainers(object)) {
      const ref = splitImage(String(container.image));
      if (ref.name !== image.name) continue;
      matched++;
      const name = typeof image.newName === "string" ? image.newName : ref.name;
      if (typeof image.digest === "string") container.image = `${name}@${image.digest}`;
      else if (image.newTag !== undefined) container.image = `${name}:${String(image.newTag)}`;
      else container.image = `${name}${ref.rest}`;
    }
  }
  if (matched === 0) throw new KustomizeError(where, field, `no container uses the image ${image.name}`);
}

/** "registry:5000/a/b:tag@sha256:..." -> name "registry:5000/a/b", rest ":tag@sha256:...". */
function splitImage(image: string): { name: string; rest: string } {
  const at = image.indexOf("@");
  const beforeDigest = at >= 0 ? image.slice(0, at) : image;
  const slash = beforeDigest.lastIndexOf("/");
  const colon = beforeDigest.lastIndexOf(":");
  const end = colon > slash ? colon : beforeDigest.length;
  return { name: image.slice(0, end), rest: image.slice(end) };
}

function podContainers(object: K8sObject): Record<string, unknown>[] {
  const spec = object.spec as Record<string, unknown> | undefined;
  const template = (spec?.jobTemplate as Record<string, any> | undefined)?.spec?.template ?? spec?.template;
  const podSpec = object.kind === "Pod" ? spec : (template as Record<string, any> | undefined)?.spec;
  if (!isRecord(podSpec)) return [];
  return ["initContainers", "containers"].flatMap((key) => (Array.isArray(podSpec[key]) ? (podSpec[key] as Record<string, unknown>[]) : []));
}

// ---------------------------------------------------------------------------------------
// patches: RFC 6902 operations applied to the objects a target selects.

function applyPatch(objects: Rendered[], patch: unknown, dir: string, where: string, field: string): void {
  if (!isRecord(patch)) throw new KustomizeError(where, field, "must be a mapping");
  for (const key of Object.keys(patch)) {
    if (!["path", "patch", "target"].includes(key)) throw new KustomizeError(where, `${field}.${key}`, "is not supported (path, patch, target)");
  }
  if (!isRecord(patch.target)) throw new KustomizeError(where, `${field}.target`, "is required: this renderer applies JSON 6902 patches to a named target");
  const target = patch.target as PatchTarget;
  for (const key of Object.keys(target)) {
    if (!["group", "version", "kind", "name"].includes(key)) throw new KustomizeError(where, `${field}.target.${key}`, "is not supported (group, version, kind, name)");
  }
  let text: string;
  let patchWhere = where;
  if (typeof patch.path === "string") {
    const path = resolve(dir, patch.path);
    if (!existsSync(path)) throw new KustomizeError(where, `${field}.path`, `${patch.path} does not exist`);
    text = readFileSync(path, "utf8");
    patchWhere = join(dirname(where), patch.path);
  } else if (typeof patch.patch === "string") text = patch.patch;
  else throw new KustomizeError(where, field, "needs a path or an inline patch");
  const docs = parseYamlDocuments(text, patchWhere);
  const ops = docs[0];
  if (docs.length !== 1 || !Array.isArray(ops)) throw new KustomizeError(patchWhere, "(document)", "must be one list of JSON 6902 operations (strategic merge patches are not supported by this renderer)");

  const selected = objects.filter(({ object }) => matches(object, target));
  if (selected.length === 0) throw new KustomizeError(where, `${field}.target`, `selects no object (${JSON.stringify(target)})`);
  for (const r of selected) {
    ops.forEach((op, i) => {
      try {
        applyOperation(r.object, op as Op);
      } catch (err) {
        throw new KustomizeError(patchWhere, `[${i}] ${(op as Op)?.op ?? "?"} ${(op as Op)?.path ?? "?"}`, `${(err as Error).message} (on ${objectId(r.object)})`);
      }
    });
  }
}

function matches(object: K8sObject, target: PatchTarget): boolean {
  const [group, version] = object.apiVersion.includes("/") ? object.apiVersion.split("/") : ["", object.apiVersion];
  return (
    (target.group === undefined || target.group === group) &&
    (target.version === undefined || target.version === version) &&
    (target.kind === undefined || target.kind === object.kind) &&
    (target.name === undefined || target.name === object.metadata.name)
  );
}

function pointer(path: string): string[] {
  if (path === "") return [];
  if (!path.startsWith("/")) throw new Error(`"${path}" is not a JSON pointer`);
  return path.slice(1).split("/").map((t) => t.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function applyOperation(doc: Record<string, unknown>, op: Op): void {
  if (!isRecord(op) || typeof op.path !== "string") throw new Error("an operation needs op and path");
  const tokens = pointer(op.path);
  if (tokens.length === 0) throw new Error("the whole document cannot be replaced");
  const last = tokens[tokens.length - 1];
  let parent: unknown = doc;
  for (const t of tokens.slice(0, -1)) {
    parent = Array.isArray(parent) ? parent[arrayIndex(parent, t, false)] : isRecord(parent) ? parent[t] : undefined;
    if (parent === undefined) throw new Error(`the path does not exist at "${t}"`);
  }
  const clone = () => structuredClone(op.value);
  switch (op.op) {
    case "add":
      if (!("value" in op)) throw new Error("add needs a value");
      if (Array.isArray(parent)) parent.splice(last === "-" ? parent.length : arrayIndex(parent, last, true), 0, clone());
      else if (isRecord(parent)) parent[last] = clone();
      else throw new Error("the parent is not a container");
      return;
    case "replace":
    case "remove":
    case "test": {
      if (Array.isArray(parent)) {
        const i = arrayIndex(parent, last, false);
        if (op.op === "replace") parent[i] = clone();
        else if (op.op === "remove") parent.splice(i, 1);
        else if (JSON.stringify(parent[i]) !== JSON.stringify(op.value)) throw new Error(`test failed: ${JSON.stringify(parent[i])}`);
        return;
      }
      if (!isRecord(parent) || !(last in parent)) throw new Error(`nothing at "${last}" to ${op.op}`);
      if (op.op === "replace") parent[last] = clone();
      else if (op.op === "remove") delete parent[last];
      else if (JSON.stringify(parent[last]) !== JSON.stringify(op.value)) throw new Error(`test failed: ${JSON.stringify(parent[last])}`);
      return;
    }
    default:
      throw new Error(`operation "${op.op}" is not supported (add, remove, replace, test)`);
  }
}

function arrayIndex(array: unknown[], token: string, forAdd: boolean): number {
  if (!/^(0|[1-9][0-9]*)$/.test(token)) throw new Error(`"${token}" is not an array index`);
  const i = Number(token);
  if (i > array.length || (!forAdd && i === array.length)) throw new Error(`index ${i} is past the end (${array.length} items)`);
  return i;
}
