// What one large output costs on its way out of ONNX Runtime into JavaScript: a graph that
// multiplies a [rows, vocab] float32 input by one, timed through session.run (median of 15).
// onnxruntime-node copies every output into a new JavaScript buffer; above glibc's mmap
// threshold that buffer is fresh pages every run. The script runs itself twice, with glibc's
// defaults and with RECOMMENDED_GLIBC_TUNABLES, and prints both and their ratio.
//   npx tsx bench/output-copy.ts [--rows 64] [--vocab 151936]
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import { GraphBuilder } from "#core/formats/onnx-builder.ts";
import { encodeInline } from "#core/formats/onnx-file.ts";
import { RECOMMENDED_GLIBC_TUNABLES } from "#inference/model/process-settings.ts";
import { runScriptChild } from "./processes.ts";
import { option } from "./script-option.ts";

const args = process.argv.slice(2);
const rows = Number(option(args, "--rows", "64"));
const vocab = Number(option(args, "--vocab", "151936"));

async function medianRunMs(): Promise<number> {
  const g = new GraphBuilder();
  const x = g.input("x", "float32", [rows, vocab]);
  g.output(g.op("Mul", [x, g.float32([1], [])]), "y", "float32", [rows, vocab]);
  const session = await ort.InferenceSession.create(encodeInline(g, { graphName: "output_copy", docString: "one [rows, vocab] output" }), { executionProviders: ["cpu"], intraOpNumThreads: 2 });
  const feeds = { x: new ort.Tensor("float32", new Float32Array(rows * vocab).fill(0.5), [rows, vocab]) };
  const times: number[] = [];
  for (let i = 0; i < 16; i++) {
    const started = performance.now();
    await session.run(feeds);
    if (i > 0) times.push(performance.now() - started);
  }
  await session.release();
  return times.sort((a, b) => a - b)[Math.floor(times.length / 2)];
}

if (args.includes("--child")) {
  console.log(JSON.stringify({ ms: await medianRunMs() }));
} else {
  const self = fileURLToPath(import.meta.url);
  const measure = (tunables: string | undefined) => {
    const env = { ...process.env };
    if (tunables === undefined) delete env.GLIBC_TUNABLES;
    else env.GLIBC_TUNABLES = tunables;
    return runScriptChild<{ ms: number }>(self, args, { env }).ms;
  };
  const defaults = measure(undefined);
  const tuned = measure(RECOMMENDED_GLIBC_TUNABLES);
  const mb = (rows * vocab * 4) / 1e6;
  console.log(`session.run of one [${rows}, ${vocab}] float32 output (${mb.toFixed(1)} MB), median of 15:`);
  console.log(`  glibc defaults: ${defaults.toFixed(1)} ms`);
  console.log(`  GLIBC_TUNABLES=${RECOMMENDED_GLIBC_TUNABLES}: ${tuned.toFixed(1)} ms (${(defaults / tuned).toFixed(2)}x)`);
}
