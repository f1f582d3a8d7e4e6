// Chooses the TensorFlow.js backend the trainer runs on, at run time: the native TensorFlow
// bindings (GPU, then CPU) where they installed, else the WebAssembly backend, else the
// pure-JS one. The native packages download libtensorflow at install time and fail on
// machines without that network access, so they are optional and probed, never imported
// statically; the caller gets the choice and why each better backend was passed over.
import * as tf from "@tensorflow/tfjs";
import { createRequire } from "node:module";
import { dirname } from "node:path";

export const BACKEND_KINDS = ["node-gpu", "node", "wasm", "cpu"] as const;
/** Our names for the candidates, best first. */
export type BackendKind = (typeof BACKEND_KINDS)[number];

/** Environment variable that forces one backend (`auto` or unset: best available). */
export const BACKEND_ENV = "LR_TFJS_BACKEND";

export interface SkippedBackend {
  kind: BackendKind;
  reason: string;
}

export interface BackendChoice {
  kind: BackendKind;
  /** The name tfjs registered it under (`tensorflow` for both native packages). */
  tfjsName: string;
  /** True when the option or LR_TFJS_BACKEND named it. */
  forced: boolean;
  /** Better candidates that were tried and passed over, with the reason. */
  skipped: SkippedBackend[];
}

/** A forced backend cannot be loaded, or the forcing value is not a backend name. */
export class BackendUnavailableError extends Error {
  constructor(
    readonly kind: string,
    readonly reason: string,
  ) {
    super(`TensorFlow.js backend "${kind}" is unavailable: ${reason}`);
    this.name = "BackendUnavailableError";
  }
}

export interface SelectBackendOptions {
  /** Overrides LR_TFJS_BACKEND. */
  force?: BackendKind | "auto";
  env?: NodeJS.ProcessEnv;
}

const NATIVE_PACKAGES: Record<"node-gpu" | "node", string> = {
  "node-gpu": "@tensorflow/tfjs-node-gpu",
  node: "@tensorflow/tfjs-node",
};

const require = createRequire(import.meta.url);

/** Activates the best available backend (or the forced one) and says which and why. */
export async function selectBackend(options: SelectBackendOptions = {}): Promise<BackendChoice> {
  const wanted = parseForced(options.force ?? (options.env ?? process.env)[BACKEND_ENV]);
  if (wanted !== "auto") {
    const tfjsName = await tryActivate(wanted);
    if (typeof tfjsName !== "string") throw new BackendUnavailableError(wanted, tfjsName.reason);
    return { kind: wanted, tfjsName, forced: true, skipped: [] };
  }
  const skipped: SkippedBackend[] = [];
  for (const kind of BACKEND_KINDS) {
    const tfjsName = await tryActivate(kind);
    if (typeof tfjsName === "string") return { kind, tfjsName, forced: false, skipped };
    skipped.push({ kind, reason: tfjsName.reason });
  }
  throw new BackendUnavailableError("cpu", skipped.map((s) => `${s.kind}: ${s.reason}`).join("; "));
}

/** One log line: the backend in use and why better ones were not. */
export function describeBackendChoice(choice: BackendChoice): string {
  const how = choice.forced ? `forced by ${BACKEND_ENV} or option` : "best available";
  const passed = choice.skipped.map((s) => `${s.kind} (${s.reason})`).join(", ");
  return `tfjs backend ${choice.kind} [${choice.tfjsName}], ${how}` + (passed ? `; skipped ${passed}` : "");
}

function parseForced(value: string | undefined): BackendKind | "auto" {
  if (value === undefined || value === "" || value === "auto") return "auto";
  if ((BACKEND_KINDS as readonly string[]).includes(value)) return value as BackendKind;
  throw new BackendUnavailableError(value, `${BACKEND_ENV} must be one of auto, ${BACKEND_KINDS.join(", ")}`);
}

async function tryActivate(kind: BackendKind): Promise<string | { reason: string }> {
  try {
    switch (kind) {
      case "node-gpu":
      case "node":
        return await activateNative(NATIVE_PACKAGES[kind]);
      case "wasm":
        return await activateWasm();
      case "cpu":
        return await activate("cpu");
    }
  } catch (err) {
    return { reason: (err as Error).message.split("\n")[0] };
  }
}

async function activate(name: string): Promise<string> {
  if (!(await tf.setBackend(name))) throw new Error(`tf.setBackend("${name}") failed to initialise`);
  await tf.ready();
  return name;
}

async function activateNative(pkg: string): Promise<string | { reason: string }> {
  try {
    require.resolve(pkg);
  } catch {
    return { reason: `${pkg} is not installed (optional; its install needs libtensorflow downloads)` };
  }
  // A variable specifier keeps TypeScript from resolving a package that may be absent.
  const specifier: string = pkg;
  await import(specifier);
  if (!tf.findBackendFactory("tensorflow")) {
    return { reason: `${pkg} loaded but registered no "tensorflow" backend with this copy of @tensorflow/tfjs` };
  }
  return activate("tensorflow");
}

let wasmPathsSet = false;

async function activateWasm(): Promise<string> {
  const wasm = await import("@tensorflow/tfjs-backend-wasm");
  if (!wasmPathsSet) {
    // Point the loader at the package's own binaries so it works whichever entry point
    // (CommonJS or ESM) Node resolved; the trailing slash makes it a directory prefix.
    const dir = dirname(require.resolve("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm"));
    wasm.setWasmPaths(`${dir}/`);
    wasmPathsSet = true;
  }
  return activate("wasm");
}

/**
 * The wasm backend lives in one 32-bit WebAssembly heap: past 4 GiB allocations fail with a
 * bare "memory access out of bounds" or "Aborted()". Its fast matMul (XNNPACK) also keeps a
 * packed copy of every right-hand operand it has multiplied by, so each weight costs twice
 * its size (measured: 512 MiB of weights, 1057 MiB of heap after one product each). Weights
 * get at most this much, leaving about 1 GiB for activations, gradients and optimizer state.
 */
export const WASM_WEIGHT_BUDGET_BYTES = 1.5 * 2 ** 30;

/** Throws a BackendUnavailableError before loading weights the active backend cannot hold. */
export function checkWeightsFitBackend(weightBytes: number, what: string, backend: string = tf.getBackend()): void {
  if (backend === "wasm" && weightBytes > WASM_WEIGHT_BUDGET_BYTES) {
    const gib = (b: number) => (b / 2 ** 30).toFixed(2);
    throw new BackendUnavailableError(
      "wasm",
      `${what} needs ${gib(weightBytes)} GiB of float32 weights; the wasm heap (4 GiB in all, weights held twice by its matMul) allows ${gib(WASM_WEIGHT_BUDGET_BYTES)} GiB. Install @tensorflow/tfjs-node(-gpu) or use a smaller model`,
    );
  }
}

/** Kernel names from `kernelNames` that `backend` has no implementation for. */
export function missingKernels(kernelNames: Iterable<string>, backend: string = tf.getBackend()): string[] {
  return [...new Set(kernelNames)].filter((name) => tf.getKernel(name, backend) === undefined).sort();
}

export interface MatmulMeasureOptions {
  /** Square matrix side. */
  size?: number;
  /** Keep multiplying for at least this long. */
  minMs?: number;
}

/** float32 matMul throughput of the active backend, in GFLOP/s (2 n^3 per product). */
export function measureMatmulGflops(options: MatmulMeasureOptions = {}): number {
  const n = options.size ?? 256;
  const minMs = options.minMs ?? 300;
  const a = tf.randomUniform([n, n], -1, 1, "float32", 1);
  const b = tf.randomUniform([n, n], -1, 1, "float32", 2);
  try {
    const once = () => {
      const c = tf.matMul(a, b);
      c.dataSync();
      c.dispose();
    };
    once(); // the first product pays for kernel setup
    let products = 0;
    const start = performance.now();
    let elapsed = 0;
    while (elapsed < minMs) {
      once();
      products++;
      elapsed = performance.now() - start;
    }
    return (2 * n ** 3 * products) / (elapsed / 1000) / 1e9;
  } finally {
    a.dispose();
    b.dispose();
  }
}
