// The benchmark's Python peers (bench/peers/*.py: numpy and PyTorch on the same work as ONNX
// Runtime), run as one-shot child processes that print one JSON line. Which interpreter:
// $LIGHTREASONER_BENCH_PYTHON if set (and then only it), else the first of Debian's
// /usr/bin/python3 and the PATH's python3 that has torch (then numpy): a version manager's python3 often shadows the
// one apt installed the peers into. A peer that is not installed is reported as missing,
// with how to install it; it never yields a figure.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { REPO_ROOT } from "./paths.ts";
import { BenchProcessError } from "./processes.ts";

export const PEERS_DIR = join(REPO_ROOT, "bench", "peers");
export const PEER_INSTALL_HINT = "apt-get install python3-torch python3-numpy libopenblas0-openmp";

export type PeerLibrary = "torch" | "numpy";

export interface PythonFound {
  interpreter: string;
  has: Record<PeerLibrary, boolean>;
}

/** A peer's answer: its result, or which library it lacked and how to install it. */
export type PeerOutcome<T> = { ok: true; interpreter: string; result: T } | { ok: false; missing: string; install: string };

function exec(file: string, args: string[], timeoutMs: number): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // No __pycache__ beside the peers in the checkout.
    const env = { ...process.env, PYTHONDONTWRITEBYTECODE: "1" };
    execFile(file, args, { cwd: PEERS_DIR, env, timeout: timeoutMs, maxBuffer: 64 << 20, encoding: "utf8" }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === "number" ? ((err as { code: number }).code) : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const PROBE = "import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None for m in ('torch', 'numpy')}))";

let found: Promise<PythonFound | null> | undefined;

/** The interpreter the peers run with (found once per process), or null when there is no Python at all. */
export function findPython(): Promise<PythonFound | null> {
  found ??= (async () => {
    // One the user named is used as it is, even without torch: then the peers say what is missing.
    const named = process.env.LIGHTREASONER_BENCH_PYTHON;
    const candidates = named ? [named] : ["/usr/bin/python3", "python3"];
    const probed: PythonFound[] = [];
    for (const interpreter of candidates) {
      const { code, stdout } = await exec(interpreter, ["-c", PROBE], 30_000);
      if (code !== 0) continue;
      const has = JSON.parse(stdout.trim()) as Record<PeerLibrary, boolean>;
      probed.push({ interpreter, has });
      if (has.torch) break;
    }
    return probed.find((p) => p.has.torch) ?? probed.find((p) => p.has.numpy) ?? probed[0] ?? null;
  })();
  return found;
}

/** Runs bench/peers/<script> with `input` as its JSON argument. */
export async function runPeer<T>(script: string, input: unknown, timeoutMs: number): Promise<PeerOutcome<T>> {
  const python = await findPython();
  if (!python) return { ok: false, missing: "python3", install: `apt-get install python3 ${PEER_INSTALL_HINT.replace("apt-get install ", "")}` };
  const { code, stdout, stderr } = await exec(python.interpreter, [script, JSON.stringify(input)], timeoutMs);
  const last = stdout.trim().split("\n").pop() ?? "";
  let line: { result?: T; missing?: string; install?: string; error?: string };
  try {
    line = JSON.parse(last) as typeof line;
  } catch {
    throw new BenchProcessError(`${python.interpreter} ${script}: exited ${code} without a JSON line${code === -1 ? ` (killed after ${timeoutMs} ms?)` : ""}; stderr: ${stderr.slice(-2000)}`);
  }
  if (line.missing !== undefined) return { ok: false, missing: line.missing, install: line.install ?? PEER_INSTALL_HINT };
  if (line.error !== undefined || line.result === undefined) throw new BenchProcessError(`${python.interpreter} ${script} failed: ${line.error ?? "no result"}`);
  return { ok: true, interpreter: python.interpreter, result: line.result };
}
