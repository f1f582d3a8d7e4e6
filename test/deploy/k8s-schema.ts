// Offline validation of Kubernetes objects against the API's schemas, in two halves:
// kubernetes-models (and @kubernetes-models/prometheus-operator for the CRDs) check types,
// required fields, enums and formats such as quantities; its schemas accept unknown fields,
// as the API server does without strict field validation, so a misspelt field
// (`readinesProbe`) would pass. The second half type-checks each object as an object literal
// of the models' TypeScript interface, where TypeScript's excess-property check names every
// field the schema does not define, at any depth (what `kubectl apply --validate=strict` does).
import { join } from "node:path";
import ts from "typescript";
import type { K8sObject, Rendered } from "./kustomize.ts";

interface ModelClass {
  new (data: unknown): { validate(): void };
}

/** Where the model of an apiVersion lives: core "v1" and groups in kubernetes-models, CRDs elsewhere. */
function modelModule(apiVersion: string): string {
  if (apiVersion.startsWith("monitoring.coreos.com/")) return `@kubernetes-models/prometheus-operator/${apiVersion}`;
  return `kubernetes-models/${apiVersion}`;
}

async function modelClass(o: K8sObject): Promise<ModelClass> {
  let module: Record<string, unknown>;
  try {
    module = (await import(modelModule(o.apiVersion))) as Record<string, unknown>;
  } catch {
    throw new Error(`apiVersion ${o.apiVersion} is not one the schemas know`);
  }
  const model = module[o.kind];
  if (typeof model !== "function") throw new Error(`${o.apiVersion} has no kind ${o.kind}`);
  return model as ModelClass;
}

/** Schema errors of each object ("" when valid), by the models' validators. */
export async function schemaErrors(objects: Rendered[]): Promise<string[]> {
  const out: string[] = [];
  for (const { source, object } of objects) {
    const where = `${source} ${object.kind}/${object.metadata?.name}`;
    try {
      new (await modelClass(object))(object).validate();
    } catch (err) {
      out.push(`${where}: ${(err as Error).message}`);
    }
  }
  return out;
}

/**
 * Fields the schema does not define (and any type mismatch TypeScript sees), one message per
 * problem, naming the object. One TypeScript program for all objects: a few seconds.
 */
export function unknownFieldErrors(objects: Rendered[], root = process.cwd()): string[] {
  const file = join(root, "test", "deploy", "__manifests__.generated.ts");
  const lines: string[] = [];
  const spans: { from: number; to: number; where: string }[] = [];
  objects.forEach(({ object }, i) => lines.push(`import type { I${object.kind} as T${i} } from "${modelModule(object.apiVersion)}";`));
  objects.forEach(({ source, object }, i) => {
    const body = JSON.stringify(object, null, 2).split("\n");
    const from = lines.length + 1;
    lines.push(`export const m${i}: T${i} = ${body[0]}`, ...body.slice(1));
    spans.push({ from, to: lines.length, where: `${source} ${object.kind}/${object.metadata?.name}` });
  });
  const text = `${lines.join("\n")}\n`;
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const readFile = host.readFile.bind(host);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  host.readFile = (f) => (f === file ? text : readFile(f));
  host.fileExists = (f) => f === file || fileExists(f);
  host.getSourceFile = (f, language, onError, shouldCreate) => (f === file ? ts.createSourceFile(f, text, language, true) : getSourceFile(f, language, onError, shouldCreate));
  const program = ts.createProgram({ rootNames: [file], options, host });
  const diagnostics = [...program.getSyntacticDiagnostics(), ...program.getSemanticDiagnostics()].filter((d) => d.file?.fileName === file || d.file === undefined);
  return diagnostics.map((d) => {
    const message = ts.flattenDiagnosticMessageText(d.messageText, " ");
    if (!d.file || d.start === undefined) return message;
    const line = d.file.getLineAndCharacterOfPosition(d.start).line + 1;
    const span = spans.find((s) => line >= s.from && line <= s.to);
    const path = span ? jsonPathAt(d.file.text, d.start) : "";
    return `${span?.where ?? `import line ${line}`}${path ? ` at ${path}` : ""}: ${message}`;
  });
}

/** The chain of keys down to the line of a position in the generated literal (array indices left out). */
function jsonPathAt(text: string, position: number): string {
  const lineEnd = text.indexOf("\n", position);
  const before = text.slice(0, lineEnd < 0 ? text.length : lineEnd);
  const start = before.lastIndexOf("export const m");
  const keys: { indent: number; key: string }[] = [];
  for (const line of before.slice(start).split("\n").slice(1)) {
    const m = /^(\s*)"([^"]+)":/.exec(line);
    if (!m) continue;
    const indent = m[1].length;
    while (keys.length > 0 && keys[keys.length - 1].indent >= indent) keys.pop();
    keys.push({ indent, key: m[2] });
  }
  return keys.map((k) => k.key).join(".");
}

