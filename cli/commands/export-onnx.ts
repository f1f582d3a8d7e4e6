// `lightreasoner export-onnx`: a model directory (optionally with a LoRA adapter merged in)
// as an ONNX graph that ONNX Runtime runs with no custom operators.
import type { Command } from "commander";
import { exportOnnx } from "#inference/model/export.ts";

export function registerExportOnnx(program: Command): void {
  program
    .command("export-onnx")
    .description("export a llama/qwen2 model directory to ONNX (Optimum causal-LM input and output names)")
    .argument("<model-dir>", "Hugging Face model directory (config.json + safetensors)")
    .option("--adapter <peft-dir>", "PEFT LoRA adapter to merge into the exported weights")
    .option("--out <file>", "output file (default: <model-dir>/onnx/model.onnx)")
    .action(async (modelDir: string, opts: { adapter?: string; out?: string }) => {
      const started = performance.now();
      const result = await exportOnnx({ modelDir, adapterDir: opts.adapter, outPath: opts.out });
      console.log(`wrote ${JSON.stringify(result)} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    });
}
