// Would a cache of ONNX Runtime's prepacked weights shorten the inference service's start-up?
// ONNX Runtime can save an optimized model whose external data holds the prepacked weights
// (session.save_external_prepacked_constant_initializers) and map them back on load. This
// probe opens one served model four ways, each in a child process of its own so CPU time and
// peak memory are its alone: as the service does (prepacked at load), without prepacking,
// saving the optimized model with its prepacked weights into a temporary directory, and from
// that saved model. It prints CPU seconds of the session's creation, peak and settled resident
// memory, the first step's time, the files' sizes, and how far the cached model's log-probs
// are from the served one's. The temporary directory is removed at the end.
//   npx tsx bench/ort-prepack-cache.ts <modelDir>
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { servedGraph } from "#inference/engine/served-model.ts";
import { CausalLmSession } from "#inference/model/session.ts";

const MIB = 2 ** 20;
const VARIANTS = ["prepack", "no-prepack", "save", "cached"] as const;
type Variant = (typeof VARIANTS)[number];

interface Probe {
  variant: Variant;
  createCpuSeconds: number;
  createMainThreadCpuSeconds: number;
  createWallSeconds: number;
  peakMiB: number;
  afterCreateRssMiB: number;
  firstStepMs: number | null;
  afterStepRssMiB: number | null;
  /** The first step's log-probs at the last position (prepack and cached only). */
  logProbs: number[] | null;
}

function memoryMiB(field: "VmHWM" | "VmRSS"): number {
  return Math.round((Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(readFileSync("/proc/self/status", "utf8"))![1]) * 1024) / MIB);
}

const mainThreadCpu = () => {
  const fields = readFileSync(`/proc/self/task/${process.pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
};

/** One variant, in this process; prints its Probe as one JSON line. */
async function probe(variant: Variant, dir: string, cacheDir: string): Promise<void> {
  const cachedModel = join(cacheDir, "model.onnx");
  const { graph } = servedGraph(dir);
  const cpu = process.cpuUsage();
  const main = mainThreadCpu();
  const wall = performance.now();
  let session: CausalLmSession | null = null;
  if (variant === "save") {
    const saving = await ort.InferenceSession.create(graph.bytes, {
      executionProviders: ["cpu"],
      graphOptimizationLevel: "all",
      // Quiet: it warns that a level "all" model is for this machine only, which is what a cache is.
      logSeverityLevel: 3,
      optimizedModelFilePath: cachedModel,
      extra: {
        session: {
          model_external_initializers_file_folder_path: graph.externalDataDir!,
          optimized_model_external_initializers_file_name: "model.onnx.data",
          optimized_model_external_initializers_min_size_in_bytes: "1024",
          save_external_prepacked_constant_initializers: "1",
        },
      },
    });
    await saving.release();
  } else {
    session = await CausalLmSession.open(variant === "cached" ? cachedModel : graph, { executionProvider: "cpu", prepack: variant !== "no-prepack" });
  }
  const used = process.cpuUsage(cpu);
  const result: Probe = {
    variant,
    createCpuSeconds: Number(((used.user + used.system) / 1e6).toFixed(2)),
    createMainThreadCpuSeconds: Number((mainThreadCpu() - main).toFixed(2)),
    createWallSeconds: Number(((performance.now() - wall) / 1000).toFixed(2)),
    peakMiB: memoryMiB("VmHWM"),
    afterCreateRssMiB: memoryMiB("VmRSS"),
    firstStepMs: null,
    afterStepRssMiB: null,
    logProbs: null,
  };
  if (session) {
    const started = performance.now();
    const [step] = await session.step([{ cache: session.newCache(), tokens: Array.from({ length: 16 }, (_, i) => i + 1) }]);
    result.firstStepMs = Math.round(performance.now() - started);
    result.afterStepRssMiB = memoryMiB("VmRSS");
    result.peakMiB = memoryMiB("VmHWM");
    result.logProbs = Array.from(step.logProbs);
    await session.release();
  }
  console.log(JSON.stringify(result));
}

async function main(): Promise<void> {
  const [dir, variant, cacheDir] = process.argv.slice(2);
  if (!dir || dir.startsWith("--")) throw new Error("usage: ort-prepack-cache.ts <modelDir>");
  if (variant) return probe(variant as Variant, dir, cacheDir);
  const scratch = mkdtempSync(join(tmpdir(), "lightreasoner-ort-prepack-"));
  try {
    const probes = VARIANTS.map((v) => {
      const out = execFileSync(process.execPath, [...process.execArgv, process.argv[1], dir, v, scratch], { encoding: "utf8", maxBuffer: 64 * MIB });
      return JSON.parse(out.trim().split("\n").pop()!) as Probe;
    });
    const served = probes.find((p) => p.variant === "prepack")!.logProbs!;
    const cached = probes.find((p) => p.variant === "cached")!.logProbs!;
    const files = Object.fromEntries(readdirSync(scratch).map((f) => [f, Math.round(statSync(join(scratch, f)).size / MIB)]));
    console.log(
      JSON.stringify(
        {
          dir,
          onnxruntimeNode: ort.env.versions.node,
          weightsMiB: Math.round(statSync(join(dir, "model.safetensors")).size / MIB),
          savedFilesMiB: files,
          cachedVsServedMaxAbsDiff: served.reduce((worst, x, i) => Math.max(worst, Math.abs(x - cached[i])), 0),
          probes: probes.map(({ logProbs, ...rest }) => rest),
        },
        null,
        1,
      ),
    );
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

await main();
