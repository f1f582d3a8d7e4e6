// `export-onnx`: a Hugging Face model directory, optionally with a PEFT LoRA adapter merged
// into its weights, written as the ONNX graph the inference service runs.
import { join } from "node:path";
import type { ModelConfig } from "#core/model/config.ts";
import type { WeightMap } from "#core/model/weights.ts";
import { mergeLora } from "#core/model/lora.ts";
import { loadModelDir } from "#core/formats/model-dir.ts";
import { readPeftAdapter } from "#core/formats/peft.ts";
import { buildCausalLmGraph } from "./onnx-graph.ts";
import type { ModelInfo, WrittenModel } from "./onnx-file.ts";
import { EXTERNAL_DATA_THRESHOLD, encodeInline, writeModelFile } from "./onnx-file.ts";

export interface ExportOptions {
  modelDir: string;
  /** A PEFT adapter directory whose LoRA update is merged into the exported weights. */
  adapterDir?: string;
  /** Default: <modelDir>/onnx/model.onnx */
  outPath?: string;
  /** Weight bytes above which they go to `<outPath>.data` (default 1.5 GB, under protobuf's 2 GiB). */
  externalDataThreshold?: number;
}

export interface ExportResult extends WrittenModel {
  modelType: string;
  numLayers: number;
  adapterMerged: boolean;
}

export const defaultOnnxPath = (modelDir: string) => join(modelDir, "onnx", "model.onnx");

function modelInfo(config: ModelConfig, adapterDir?: string): ModelInfo {
  return {
    graphName: `${config.modelType}_causal_lm`,
    docString: `${config.modelType} causal LM (${config.numLayers} layers, hidden ${config.hiddenSize}) exported by lightreasoner`,
    metadata: {
      model_type: config.modelType,
      num_hidden_layers: String(config.numLayers),
      vocab_size: String(config.vocabSize),
      ...(adapterDir ? { merged_lora_adapter: adapterDir } : {}),
    },
  };
}

/** The ONNX model with inline weights, as bytes ONNX Runtime can open directly. */
export function buildOnnxModel(config: ModelConfig, weights: WeightMap): Uint8Array {
  return encodeInline(buildCausalLmGraph(config, weights), modelInfo(config));
}

export async function exportOnnx(options: ExportOptions): Promise<ExportResult> {
  const { dir, config, weights } = loadModelDir(options.modelDir);
  let exported = weights;
  if (options.adapterDir) exported = mergeLora(weights, readPeftAdapter(options.adapterDir, config));
  const graph = buildCausalLmGraph(config, exported, dir);
  const outPath = options.outPath ?? defaultOnnxPath(dir);
  const written = writeModelFile(graph, modelInfo(config, options.adapterDir), outPath, options.externalDataThreshold ?? EXTERNAL_DATA_THRESHOLD);
  return { ...written, modelType: config.modelType, numLayers: config.numLayers, adapterMerged: options.adapterDir !== undefined };
}
