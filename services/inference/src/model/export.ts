// `export-onnx`: a Hugging Face model directory, optionally with a PEFT LoRA adapter merged
// into its weights, written as a standalone ONNX graph (no LoRA inputs: the file stands for
// one model) with a `logits` output beside log_probs, since tools outside this project read
// Optimum's name. The inference service itself builds its graph at start-up
// (buildServedGraph), with LoRA side branches, log_probs only, and the weights left in the
// safetensors file.
import { basename, dirname, join } from "node:path";
import type { ModelConfig } from "#core/model/config.ts";
import type { WeightMap } from "#core/model/weights.ts";
import type { StoredTensor } from "#core/formats/model-dir.ts";
import { mergeLora } from "#core/model/lora.ts";
import { loadModelDir } from "#core/formats/model-dir.ts";
import { readPeftAdapter } from "#core/formats/peft.ts";
import type { GraphOptions, GraphWeights } from "./onnx-graph.ts";
import { buildCausalLmGraph } from "./onnx-graph.ts";
import type { ModelInfo, WrittenModel } from "#core/formats/onnx-file.ts";
import { EXTERNAL_DATA_THRESHOLD, encodeInline, externalDataDir, writeModelFile } from "#core/formats/onnx-file.ts";

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

/** The ONNX model with inline weights and LoRA inputs (unless options say otherwise), as bytes ONNX Runtime can open directly. */
export function buildOnnxModel(config: ModelConfig, weights: WeightMap, options: GraphOptions = {}): Uint8Array {
  return encodeInline(buildCausalLmGraph(config, weights, "weights", options), modelInfo(config));
}

/** A served model's graph: bytes to open, and the folder ONNX Runtime reads file-backed weights from. */
export interface ServedGraph {
  bytes: Uint8Array;
  externalDataDir: string | null;
  /** The files its weights came from, when known (the key of ONNX Runtime's prepacked cache). */
  sourceFiles?: readonly string[];
}

/** Safetensors tensors as graph weights that ONNX Runtime reads from their files itself. */
export function fileBackedWeights(tensors: ReadonlyMap<string, StoredTensor>): GraphWeights {
  return new Map([...tensors].map(([name, t]) => [name, { shape: t.shape, data: { dir: dirname(t.path), location: basename(t.path), offset: t.offset, byteLength: t.byteLength } }]));
}

/** The graph the inference service serves: LoRA inputs on every projection, weights where they are (`options` for the bench's variants). */
export function buildServedGraph(config: ModelConfig, weights: GraphWeights, source: string, options: GraphOptions = {}): ServedGraph {
  const graph = buildCausalLmGraph(config, weights, source, options);
  return { bytes: encodeInline(graph, modelInfo(config)), externalDataDir: externalDataDir(graph) };
}

export async function exportOnnx(options: ExportOptions): Promise<ExportResult> {
  const { dir, config, weights } = loadModelDir(options.modelDir);
  let exported = weights;
  if (options.adapterDir) exported = mergeLora(weights, readPeftAdapter(options.adapterDir, config));
  const graph = buildCausalLmGraph(config, exported, dir, { loraModules: [], logitsOutput: true });
  const outPath = options.outPath ?? defaultOnnxPath(dir);
  const written = writeModelFile(graph, modelInfo(config, options.adapterDir), outPath, options.externalDataThreshold ?? EXTERNAL_DATA_THRESHOLD);
  return { ...written, modelType: config.modelType, numLayers: config.numLayers, adapterMerged: options.adapterDir !== undefined };
}
