// Section "limits": what this machine can do at best. A one-node MatMul graph, written with
// the project's own ONNX graph builder and run by ONNX Runtime exactly as the models run
// (CPU provider, default threads), gives the float32 matrix-multiply rate; the model pairs'
// FLOPs per generated token turn it into a ceiling in tokens per second, which the
// sampling section's best measured rate is held against.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { SeededRandom } from "#core/math/random.ts";
import { parseModelConfig } from "#core/model/config.ts";
import { openOrtSession } from "#inference/model/execution-provider.ts";
import { GraphBuilder } from "#inference/model/onnx-builder.ts";
import { encodeInline } from "#inference/model/onnx-file.ts";
import type { TokenFlops } from "./flops.ts";
import { flopsPerToken, meanContext } from "./flops.ts";
import type { PairRecipe } from "./models.ts";
import { REPO_ROOT } from "./paths.ts";
import { ensureWorld, worldPrompts } from "./workloads.ts";
import type { BenchSettings, PairWorkload } from "./settings.ts";
import type { Measured } from "./stats.ts";
import { BenchInputError, repeat } from "./stats.ts";

export interface MatmulRate {
  /** [m, k] x [k, n]. */
  m: number;
  k: number;
  n: number;
  gflops: Measured;
}

export interface PairCeiling {
  /** The sampling workload's name. */
  pair: string;
  /** Mean context the FLOPs were computed at (the sampling workload's prompt + half its tokens). */
  context: number;
  expert: TokenFlops;
  amateur: TokenFlops;
  /** Expert + amateur FLOPs per lockstep token. */
  flopsPerToken: number;
  /** peak GFLOP/s / FLOPs per token. */
  ceilingTokensPerSecond: number;
}

export interface LimitsResult {
  how: string;
  matmul: MatmulRate[];
  /** The best median over the shapes: the ceiling's rate. */
  peakGflops: number;
  pairs: PairCeiling[];
}

/** An ONNX model computing Y = X W with W [k, n] as a weight, as every linear layer of the models does. */
export function matmulModel(k: number, n: number, seed = 1): Uint8Array {
  const g = new GraphBuilder();
  const rng = new SeededRandom(seed);
  const x = g.input("x", "float32", ["m", k]);
  const w = g.weight("w", [k, n], Float32Array.from({ length: k * n }, () => rng.normal() * 0.05));
  g.op("MatMul", [x, w], {}, { outputs: ["y"] });
  g.output("y", "y", "float32", ["m", n]);
  return encodeInline(g, { graphName: "matmul" });
}

/** GFLOP/s of ONNX Runtime's MatMul at [m, k] x [k, n], running for at least `minMs` per repeat. */
export async function measureOrtMatmul(m: number, k: number, n: number, options: { minMs: number; repeats: number }): Promise<Measured> {
  const { session } = await openOrtSession(matmulModel(k, n), { executionProvider: "cpu" });
  try {
    const rng = new SeededRandom(2);
    const feeds = { x: new ort.Tensor("float32", Float32Array.from({ length: m * k }, () => rng.normal()), [m, k]) };
    await session.run(feeds);
    return await repeat({ repeats: options.repeats, warmup: 1, unit: "GFLOP/s" }, async () => {
      let products = 0;
      const start = performance.now();
      let elapsed = 0;
      while (elapsed < options.minMs) {
        await session.run(feeds);
        products++;
        elapsed = performance.now() - start;
      }
      return (2 * m * k * n * products) / (elapsed / 1000) / 1e9;
    });
  } finally {
    await session.release();
  }
}

/** The model configs of a recipe without generating the models (FLOPs need only the shape). */
function recipeConfigs(recipe: PairRecipe) {
  const source = recipe.source;
  if (source.kind === "random") return { expert: parseModelConfig(source.expert), amateur: parseModelConfig(source.amateur) };
  const read = (dir: string) => {
    const path = join(REPO_ROOT, dir, "config.json");
    return parseModelConfig(JSON.parse(readFileSync(path, "utf8")), path);
  };
  return { expert: read(source.expertDir), amateur: read(source.amateurDir) };
}

function meanWorldPromptTokens(workload: PairWorkload, cacheDir: string): number {
  if (workload.recipe.source.kind !== "dirs") throw new BenchInputError("prompts", `"world" prompts need a pair given as directories (${workload.recipe.name})`);
  const prompts = worldPrompts(ensureWorld(cacheDir), join(REPO_ROOT, workload.recipe.source.expertDir), Math.max(...workload.streams));
  return prompts.reduce((n, p) => n + p.length, 0) / prompts.length;
}

export const LIMITS_HOW =
  "float32 MatMul graphs built with the project's ONNX graph builder, run by onnxruntime-node on the CPU provider with its default threads; " +
  "FLOPs per token = 2 x (linear weights + LM head) + 4 x layers x heads x head_dim x context, expert + amateur";

export async function runLimits(settings: BenchSettings, log: (line: string) => void): Promise<LimitsResult> {
  const matmul: MatmulRate[] = [];
  for (const [m, k, n] of settings.limits.shapes) {
    const gflops = await measureOrtMatmul(m, k, n, settings.limits);
    matmul.push({ m, k, n, gflops });
    log(`  MatMul [${m}x${k}]x[${k}x${n}]: ${gflops.median.toFixed(1)} GFLOP/s`);
  }
  const peakGflops = Math.max(...matmul.map((r) => r.gflops.median));
  const pairs = settings.sampling.pairs.map((workload) => {
    const { expert, amateur } = recipeConfigs(workload.recipe);
    const prompt = workload.prompts === "world" ? meanWorldPromptTokens(workload, settings.cacheDir) : workload.prompts;
    const context = meanContext(prompt, workload.newTokens);
    const e = flopsPerToken(expert, context);
    const a = flopsPerToken(amateur, context);
    const total = e.total + a.total;
    return { pair: workload.name, context, expert: e, amateur: a, flopsPerToken: total, ceilingTokensPerSecond: (peakGflops * 1e9) / total };
  });
  return { how: LIMITS_HOW, matmul, peakGflops, pairs };
}
