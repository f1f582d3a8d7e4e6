// PEFT LoRA adapter directories (adapter_config.json + adapter_model.safetensors), the format
// a Python PEFT user loads with PeftModel.from_pretrained, mapped to and from LoraAdapter.
// Reading checks the adapter against the model it is meant for, so a wrong adapter fails
// here with the file and the tensor named instead of deep inside a matmul.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ModelFormatError, UnsupportedModelError } from "#core/model/errors.ts";
import type { ModelConfig } from "#core/model/config.ts";
import { LINEAR_MODULES, linearShape, linearWeightName, type Float32Tensor, type LinearModule } from "#core/model/weights.ts";
import { loraTargets, type LoraAdapter, type LoraPair, type LoraSettings } from "#core/model/lora.ts";
import { LinearRegex, RegexNotAcceptedError } from "./linear-regex.ts";
import { encodeSafetensors, parseSafetensors, type SafetensorsDtype } from "./safetensors.ts";

export const ADAPTER_CONFIG_FILE = "adapter_config.json";
export const ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors";

const isMlp = (m: LinearModule) => m === "gate_proj" || m === "up_proj" || m === "down_proj";
const blockOf = (m: LinearModule) => (isMlp(m) ? "mlp" : "self_attn");
const isLinearModule = (name: string): name is LinearModule => (LINEAR_MODULES as readonly string[]).includes(name);
const fmtShape = (s: readonly number[]) => `[${s.join(", ")}]`;
/** A client's value in an error message as JSON, cut short so a huge one does not fill the message. */
const brief = (value: unknown, max = 120) => {
  const json = JSON.stringify(value) ?? String(value);
  return json.length > max ? `${json.slice(0, max)}...` : json;
};

/** `model.layers.0.self_attn.q_proj.weight` -> `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`. */
export function peftTensorName(weightName: string, which: "A" | "B"): string {
  return `base_model.model.${weightName.replace(/\.weight$/, "")}.lora_${which}.weight`;
}

const PEFT_TENSOR = /^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.([A-Za-z0-9_]+)\.lora_(A|B)(?:\.default)?\.weight$/;
const WEIGHT_NAME = /^model\.layers\.(\d+)\.(self_attn|mlp)\.([A-Za-z0-9_]+)\.weight$/;

// ---------------------------------------------------------------------------------------
// adapter_config.json

export interface PeftConfig {
  settings: LoraSettings;
  baseModel: string | null;
}

/** Fields PEFT supports that change what the tensors mean; we refuse rather than misapply them. */
function rejectUnsupported(cfg: Record<string, unknown>, file: string): void {
  const unsupported = (field: string, why: string) => {
    throw new UnsupportedModelError(file, `"${field}": ${brief(cfg[field])} is not supported (${why})`);
  };
  if (cfg.bias !== undefined && cfg.bias !== "none") unsupported("bias", "only adapters without trained biases, bias = \"none\"");
  if (cfg.fan_in_fan_out === true) unsupported("fan_in_fan_out", "llama and qwen2 use nn.Linear, not Conv1D");
  if (cfg.use_rslora === true) unsupported("use_rslora", "only the alpha / r scaling");
  if (cfg.use_dora === true) unsupported("use_dora", "only plain LoRA");
  const nonEmpty = (v: unknown) => v !== undefined && v !== null && !(Array.isArray(v) && v.length === 0) && !(typeof v === "object" && !Array.isArray(v) && Object.keys(v as object).length === 0);
  for (const field of ["layers_to_transform", "rank_pattern", "alpha_pattern", "modules_to_save"]) {
    if (nonEmpty(cfg[field])) unsupported(field, "adapters must cover every layer with one rank and alpha");
  }
  if (cfg.task_type !== undefined && cfg.task_type !== null && cfg.task_type !== "CAUSAL_LM") unsupported("task_type", "only CAUSAL_LM");
}

/** The module names a target_modules value selects, in LINEAR_MODULES order. */
function parseTargetModules(value: unknown, config: ModelConfig, file: string): LinearModule[] {
  if (value === "all-linear") return [...LINEAR_MODULES];
  if (typeof value === "string") {
    // PEFT treats a string as a regular expression that must match a whole module path. A client
    // sends it, so it is matched in linear time with bounded work, never by a backtracking RegExp.
    let re: LinearRegex;
    try {
      re = new LinearRegex(value);
    } catch (err) {
      if (!(err instanceof RegexNotAcceptedError)) throw err;
      throw new ModelFormatError(file, `"target_modules" regex ${brief(value)} is not accepted: ${err.message}`);
    }
    const fullMatch = (path: string) => {
      try {
        return re.fullMatch(path);
      } catch (err) {
        if (!(err instanceof RegexNotAcceptedError)) throw err;
        throw new ModelFormatError(file, `"target_modules" regex ${brief(value)} is not accepted: ${err.message}`);
      }
    };
    const chosen = LINEAR_MODULES.filter((m) => {
      const hits = Array.from({ length: config.numLayers }, (_, i) => fullMatch(linearWeightName(i, m).replace(/\.weight$/, "")));
      if (hits.some((h) => h) && !hits.every((h) => h)) {
        throw new UnsupportedModelError(file, `"target_modules" regex ${brief(value)} selects ${m} in some layers only; adapters must cover every layer`);
      }
      return hits[0];
    });
    if (chosen.length === 0) throw new ModelFormatError(file, `"target_modules" regex ${brief(value)} matches no linear module of this ${config.modelType} model`);
    return chosen;
  }
  if (!Array.isArray(value) || value.length === 0 || !value.every((v) => typeof v === "string")) {
    throw new ModelFormatError(file, `"target_modules" must be a non-empty list of module names, got ${brief(value)}`);
  }
  const chosen = new Set<LinearModule>();
  for (const entry of value as string[]) {
    // PEFT matches a list entry against the end of the module path, so "self_attn.q_proj" means q_proj.
    const last = entry.split(".").pop()!;
    if (!isLinearModule(last)) {
      throw new ModelFormatError(
        file,
        `target module ${brief(entry)} is not a linear module of a ${config.modelType} model; known: ${LINEAR_MODULES.join(", ")}`,
      );
    }
    chosen.add(last);
  }
  return LINEAR_MODULES.filter((m) => chosen.has(m));
}

/** Validates adapter_config.json text; `file` names it in errors. */
export function parsePeftConfig(text: string, config: ModelConfig, file: string): PeftConfig {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ModelFormatError(file, `malformed JSON: ${(err as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new ModelFormatError(file, "expected a JSON object");
  const cfg = json as Record<string, unknown>;
  if (cfg.peft_type !== "LORA") {
    throw new UnsupportedModelError(file, `peft_type ${brief(cfg.peft_type)} is not supported; only "LORA" adapters are`);
  }
  rejectUnsupported(cfg, file);
  const { r, lora_alpha: alpha, lora_dropout: dropout = 0 } = cfg;
  if (typeof r !== "number" || !Number.isInteger(r) || r <= 0) throw new ModelFormatError(file, `"r" must be a positive integer, got ${brief(r)}`);
  if (typeof alpha !== "number" || !(alpha > 0)) throw new ModelFormatError(file, `"lora_alpha" must be a positive number, got ${brief(alpha)}`);
  if (typeof dropout !== "number" || !(dropout >= 0 && dropout < 1)) {
    throw new ModelFormatError(file, `"lora_dropout" must be in [0, 1), got ${brief(dropout)}`);
  }
  const targetModules = parseTargetModules(cfg.target_modules, config, file);
  const baseModel = typeof cfg.base_model_name_or_path === "string" ? cfg.base_model_name_or_path : null;
  return { settings: { rank: r, alpha, dropout, targetModules }, baseModel };
}

// ---------------------------------------------------------------------------------------
// adapter_model.safetensors

interface HalfPair {
  a?: Float32Tensor;
  b?: Float32Tensor;
}

/** Checks one lora_A / lora_B against the rank and the adapted module's [out, in]. */
function checkFactor(which: "A" | "B", t: Float32Tensor, name: string, rank: number, shape: [number, number], file: string, configFile: string): void {
  const [out, inFeatures] = shape;
  if (t.shape.length !== 2) throw new ModelFormatError(file, `"${name}" must be 2-D, got shape ${fmtShape(t.shape)}`);
  const [rows, cols] = t.shape;
  const tensorRank = which === "A" ? rows : cols;
  if (tensorRank !== rank) {
    throw new ModelFormatError(file, `"${name}" has rank ${tensorRank} (shape ${fmtShape(t.shape)}) but ${configFile} says r = ${rank}`);
  }
  if (which === "A" && cols !== inFeatures) {
    throw new ModelFormatError(file, `"${name}" has ${cols} input features (shape ${fmtShape(t.shape)}) but the model's module takes ${inFeatures}; expected [${rank}, ${inFeatures}]`);
  }
  if (which === "B" && rows !== out) {
    throw new ModelFormatError(file, `"${name}" has ${rows} output features (shape ${fmtShape(t.shape)}) but the model's module gives ${out}; expected [${out}, ${rank}]`);
  }
}

/**
 * Refuses a factor holding NaN or an infinity: merged into the expert it would turn every
 * distribution the adapter touches into NaN, and nothing downstream could say why.
 */
function checkFinite(t: Float32Tensor, name: string, file: string): void {
  const { data } = t;
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) {
      const cols = t.shape[1];
      throw new ModelFormatError(file, `"${name}" holds a non-finite value (${data[i]}) at [${Math.floor(i / cols)}, ${i % cols}]; LoRA weights must be finite`);
    }
  }
}

/** Sorts adapter tensors into (layer, module) pairs, refusing anything the model does not have. */
function collectPairs(tensors: Map<string, Float32Tensor>, settings: LoraSettings, config: ModelConfig, file: string, configFile: string): Map<string, HalfPair> {
  const halves = new Map<string, HalfPair>();
  for (const [name, tensor] of tensors) {
    const m = PEFT_TENSOR.exec(name);
    if (!m) {
      throw new ModelFormatError(file, `unexpected tensor "${name}"; expected base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_{A|B}.weight`);
    }
    const [, layerText, block, module, which] = m;
    const layer = Number(layerText);
    if (!isLinearModule(module)) throw new ModelFormatError(file, `"${name}": unknown module "${module}"; known: ${LINEAR_MODULES.join(", ")}`);
    if (block !== blockOf(module)) throw new ModelFormatError(file, `"${name}": ${module} belongs under ${blockOf(module)}, not ${block}`);
    if (layer >= config.numLayers) throw new ModelFormatError(file, `"${name}": layer index ${layer} is out of range; the model has ${config.numLayers} layers`);
    if (!settings.targetModules.includes(module)) {
      throw new ModelFormatError(file, `"${name}" adapts ${module}, which ${configFile} does not list in target_modules (${settings.targetModules.join(", ")})`);
    }
    const shape = linearShape(config, module);
    checkFactor(which as "A" | "B", tensor, name, settings.rank, shape, file, configFile);
    checkFinite(tensor, name, file);
    const key = linearWeightName(layer, module);
    const half = halves.get(key) ?? {};
    half[which === "A" ? "a" : "b"] = { shape: tensor.shape, data: tensor.data };
    halves.set(key, half);
  }
  return halves;
}

/** Parses an adapter from its two files' contents; `source` (a directory or an upload name) prefixes file names in errors. */
export function parsePeftAdapter(configJsonText: string, safetensorsBytes: Uint8Array, modelConfig: ModelConfig, source: string): LoraAdapter {
  const { settings } = parsePeftConfig(configJsonText, modelConfig, join(source, ADAPTER_CONFIG_FILE));
  const { tensors } = parseSafetensors(safetensorsBytes, join(source, ADAPTER_WEIGHTS_FILE));
  return assemblePeftAdapter(settings, tensors, modelConfig, source);
}

/**
 * The adapter from an already parsed adapter_config.json and safetensors file, for a caller
 * that parses each itself (to tell their errors apart) and should not pay for either twice.
 */
export function assemblePeftAdapter(settings: LoraSettings, tensors: Map<string, Float32Tensor>, modelConfig: ModelConfig, source: string): LoraAdapter {
  const configFile = join(source, ADAPTER_CONFIG_FILE);
  const weightsFile = join(source, ADAPTER_WEIGHTS_FILE);
  const halves = collectPairs(tensors, settings, modelConfig, weightsFile, configFile);
  const pairs = new Map<string, LoraPair>();
  for (const { layer, module, name } of loraTargets(modelConfig, settings)) {
    const half = halves.get(name);
    const missing = [!half?.a && "lora_A", !half?.b && "lora_B"].filter(Boolean);
    if (missing.length > 0) {
      throw new ModelFormatError(weightsFile, `missing ${missing.join(" and ")} for layer ${layer} ${module} (${peftTensorName(name, missing[0] === "lora_A" ? "A" : "B")})`);
    }
    pairs.set(name, { a: half!.a!, b: half!.b! });
  }
  return { settings, pairs };
}

/** Reads `<dir>/adapter_config.json` and `<dir>/adapter_model.safetensors` for a model with `modelConfig`. */
export function readPeftAdapter(dir: string, modelConfig: ModelConfig): LoraAdapter {
  if (!existsSync(dir)) throw new ModelFormatError(dir, "adapter directory does not exist");
  const configFile = join(dir, ADAPTER_CONFIG_FILE);
  const weightsFile = join(dir, ADAPTER_WEIGHTS_FILE);
  if (!existsSync(configFile)) throw new ModelFormatError(configFile, "missing: a PEFT adapter directory needs adapter_config.json");
  if (!existsSync(weightsFile)) {
    const hint = existsSync(join(dir, "adapter_model.bin")) ? "; adapter_model.bin is not supported, save with safe_serialization" : "";
    throw new ModelFormatError(weightsFile, `missing: a PEFT adapter directory needs adapter_model.safetensors${hint}`);
  }
  return parsePeftAdapter(readFileSync(configFile, "utf8"), new Uint8Array(readFileSync(weightsFile)), modelConfig, dir);
}

// ---------------------------------------------------------------------------------------
// Writing

export interface EncodePeftOptions {
  /** Written as base_model_name_or_path (a hub id or the base model's directory). */
  baseModel?: string | null;
  dtype?: SafetensorsDtype;
}

/** The adapter_config.json PEFT writes for these settings. */
export function peftConfigJson(settings: LoraSettings, baseModel: string | null): string {
  const cfg = {
    peft_type: "LORA",
    task_type: "CAUSAL_LM",
    base_model_name_or_path: baseModel,
    r: settings.rank,
    lora_alpha: settings.alpha,
    lora_dropout: settings.dropout,
    target_modules: settings.targetModules,
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: {},
    alpha_pattern: {},
    modules_to_save: null,
    use_rslora: false,
    use_dora: false,
  };
  return `${JSON.stringify(cfg, null, 2)}\n`;
}

/** Refuses an adapter whose own pieces disagree (a bug in the caller, not a user's file). */
function checkAdapter(adapter: LoraAdapter): void {
  const { rank, targetModules } = adapter.settings;
  for (const [name, { a, b }] of adapter.pairs) {
    const m = WEIGHT_NAME.exec(name);
    if (!m || !isLinearModule(m[3]) || m[2] !== blockOf(m[3])) throw new Error(`LoRA pair key "${name}" is not a linear module weight name`);
    if (!targetModules.includes(m[3])) throw new Error(`LoRA pair "${name}" adapts ${m[3]}, which is not in targetModules`);
    if (a.shape.length !== 2 || a.shape[0] !== rank || b.shape.length !== 2 || b.shape[1] !== rank) {
      throw new Error(`LoRA pair "${name}": A ${fmtShape(a.shape)} / B ${fmtShape(b.shape)} do not have rank ${rank}`);
    }
  }
}

/** The two files of a PEFT adapter directory, as bytes (e.g. to send over gRPC). */
export function encodePeftAdapter(adapter: LoraAdapter, options: EncodePeftOptions = {}): { configJson: string; safetensors: Uint8Array } {
  checkAdapter(adapter);
  const tensors = new Map<string, Float32Tensor>();
  for (const [name, { a, b }] of adapter.pairs) {
    tensors.set(peftTensorName(name, "A"), a);
    tensors.set(peftTensorName(name, "B"), b);
  }
  return {
    configJson: peftConfigJson(adapter.settings, options.baseModel ?? null),
    safetensors: encodeSafetensors(tensors, { dtype: options.dtype, metadata: { format: "pt" } }),
  };
}

/** Writes a PEFT adapter directory that PeftModel.from_pretrained can load. */
export function writePeftAdapter(dir: string, adapter: LoraAdapter, options: EncodePeftOptions = {}): void {
  const { configJson, safetensors } = encodePeftAdapter(adapter, options);
  mkdirSync(dir, { recursive: true });
  // Each file appears whole (write, then rename) so a reader polling the directory never sees half of one.
  for (const [name, bytes] of [[ADAPTER_WEIGHTS_FILE, safetensors], [ADAPTER_CONFIG_FILE, configJson]] as const) {
    writeFileSync(join(dir, `${name}.partial`), bytes);
    renameSync(join(dir, `${name}.partial`), join(dir, name));
  }
}
