import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { encodePeftAdapter, parsePeftAdapter, parsePeftConfig, peftTensorName, readPeftAdapter, writePeftAdapter } from "./peft.ts";
import { encodeSafetensors, parseSafetensors } from "./safetensors.ts";
import { parseModelConfig, type ModelConfig } from "#core/model/config.ts";
import { ModelFormatError, UnsupportedModelError } from "#core/model/errors.ts";
import { loraTargets, type LoraAdapter, type LoraSettings } from "#core/model/lora.ts";
import type { Float32Tensor } from "#core/model/weights.ts";
import { SeededRandom } from "#core/math/random.ts";
import { errorOf } from "#test/helpers/error-of.ts";

const root = mkdtempSync(join(tmpdir(), "lr-peft-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const MODEL_JSON = {
  model_type: "qwen2", vocab_size: 300, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2,
  num_attention_heads: 4, num_key_value_heads: 2,
};
const MODEL: ModelConfig = parseModelConfig(MODEL_JSON);

function randomTensor(shape: number[], rng: SeededRandom): Float32Tensor {
  return { shape, data: Float32Array.from({ length: shape[0] * shape[1] }, () => rng.normal()) };
}

function randomAdapter(config: ModelConfig, settings: LoraSettings, seed = 1): LoraAdapter {
  const rng = new SeededRandom(seed);
  const pairs = new Map(
    loraTargets(config, settings).map(({ name, shape: [out, inFeatures] }) => [
      name,
      { a: randomTensor([settings.rank, inFeatures], rng), b: randomTensor([out, settings.rank], rng) },
    ]),
  );
  return { settings, pairs };
}

const SETTINGS: LoraSettings = { rank: 4, alpha: 8, dropout: 0.05, targetModules: ["q_proj", "v_proj", "down_proj"] };

/** Adapter files with the config JSON and tensor map edited by the test. */
function tampered(edit: { config?: (c: Record<string, unknown>) => void; tensors?: (t: Map<string, Float32Tensor>) => void }) {
  const { configJson, safetensors } = encodePeftAdapter(randomAdapter(MODEL, SETTINGS));
  const config = JSON.parse(configJson);
  edit.config?.(config);
  const tensors = new Map([...parseSafetensors(safetensors, "x").tensors].map(([n, t]) => [n, { shape: t.shape, data: t.data }]));
  edit.tensors?.(tensors);
  return () => parsePeftAdapter(JSON.stringify(config), encodeSafetensors(tensors), MODEL, "/adapters/bad");
}

describe("PEFT adapter round trip", () => {
  it("writes a directory PEFT can load and reads back the same adapter", () => {
    const adapter = randomAdapter(MODEL, SETTINGS);
    const dir = join(root, "round-trip");
    writePeftAdapter(dir, adapter, { baseModel: "models/expert" });
    const config = JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8"));
    expect(config).toMatchObject({
      peft_type: "LORA", task_type: "CAUSAL_LM", r: 4, lora_alpha: 8, lora_dropout: 0.05, bias: "none",
      fan_in_fan_out: false, base_model_name_or_path: "models/expert", target_modules: ["q_proj", "v_proj", "down_proj"],
    });
    const file = parseSafetensors(new Uint8Array(readFileSync(join(dir, "adapter_model.safetensors"))), "x");
    expect(file.tensors.get("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight")!.shape).toEqual([4, 32]);
    expect(file.tensors.get("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight")!.shape).toEqual([16, 4]);
    expect(file.tensors.get("base_model.model.model.layers.0.mlp.down_proj.lora_A.weight")!.shape).toEqual([4, 48]);
    expect(file.tensors.size).toBe(2 * 2 * 3);

    const back = readPeftAdapter(dir, MODEL);
    expect(back.settings).toEqual(SETTINGS);
    expect([...back.pairs.keys()].sort()).toEqual([...adapter.pairs.keys()].sort());
    for (const [name, { a, b }] of adapter.pairs) {
      expect(back.pairs.get(name)!.a).toEqual(a);
      expect(back.pairs.get(name)!.b).toEqual(b);
    }
    expect(existsSync(join(dir, "adapter_config.json.partial"))).toBe(false);
  });

  it("maps weight names to PEFT tensor names", () => {
    expect(peftTensorName("model.layers.3.mlp.up_proj.weight", "B")).toBe("base_model.model.model.layers.3.mlp.up_proj.lora_B.weight");
  });

  it("accepts target_modules as all-linear, as a regex, and as dotted suffixes", () => {
    const full = tampered({ config: (c) => (c.target_modules = "all-linear") });
    expect(errorOf(full).message).toMatch(/missing lora_A and lora_B for layer 0 k_proj/);
    const regex = tampered({ config: (c) => (c.target_modules = ".*\\.(q_proj|v_proj|down_proj)") });
    expect(regex().settings.targetModules).toEqual(["q_proj", "v_proj", "down_proj"]);
    const dotted = tampered({ config: (c) => (c.target_modules = ["self_attn.q_proj", "v_proj", "mlp.down_proj"]) });
    expect(dotted().settings.targetModules).toEqual(["q_proj", "v_proj", "down_proj"]);
  });

  it("reads half-precision adapter files", () => {
    const adapter = randomAdapter(MODEL, SETTINGS);
    const { configJson, safetensors } = encodePeftAdapter(adapter, { dtype: "BF16" });
    const back = parsePeftAdapter(configJson, safetensors, MODEL, "upload");
    const name = "model.layers.0.self_attn.q_proj.weight";
    const [x, y] = [adapter.pairs.get(name)!.a.data[5], back.pairs.get(name)!.a.data[5]];
    expect(Math.abs(x - y)).toBeLessThan(Math.abs(x) * 2 ** -8);
  });
});

describe("PEFT adapter validation", () => {
  const CONFIG_FILE = join("/adapters/bad", "adapter_config.json");
  const WEIGHTS_FILE = join("/adapters/bad", "adapter_model.safetensors");

  it("refuses a peft_type other than LORA", () => {
    const err = errorOf(tampered({ config: (c) => (c.peft_type = "PREFIX_TUNING") })) as UnsupportedModelError;
    expect(err).toBeInstanceOf(UnsupportedModelError);
    expect(err.file).toBe(CONFIG_FILE);
    expect(err.problem).toMatch(/peft_type "PREFIX_TUNING" is not supported/);
  });

  it("refuses a rank that disagrees with the tensors", () => {
    const err = errorOf(tampered({ config: (c) => (c.r = 8) })) as ModelFormatError;
    expect(err.file).toBe(WEIGHTS_FILE);
    expect(err.problem).toMatch(/"base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight" has rank 4 \(shape \[4, 32\]\) but .*adapter_config\.json says r = 8/);
  });

  it("refuses target modules the model does not have", () => {
    const err = errorOf(tampered({ config: (c) => (c.target_modules = ["q_proj", "c_attn"]) })) as ModelFormatError;
    expect(err.file).toBe(CONFIG_FILE);
    expect(err.problem).toMatch(/target module "c_attn" is not a linear module of a qwen2 model; known: q_proj, k_proj/);
    expect(errorOf(tampered({ config: (c) => (c.target_modules = "lm_head") })).message).toMatch(/matches no linear module/);
  });

  it("matches a target_modules regex in linear time and refuses what the matcher does not accept", () => {
    // The nested quantifier that froze the server: now a quick "matches nothing".
    const started = performance.now();
    expect(errorOf(tampered({ config: (c) => (c.target_modules = "mo([a-z._0-9]+)+X") })).message).toMatch(/"mo\(\[a-z\._0-9\]\+\)\+X" matches no linear module/);
    expect(performance.now() - started).toBeLessThan(1000);
    const lookahead = errorOf(tampered({ config: (c) => (c.target_modules = "^(?!.*mlp).*q_proj") })) as ModelFormatError;
    expect(lookahead).toBeInstanceOf(ModelFormatError);
    expect(lookahead.file).toBe(CONFIG_FILE);
    expect(lookahead.problem).toBe(`"target_modules" regex "^(?!.*mlp).*q_proj" is not accepted: lookahead is not supported at position 1`);
    // The costliest pattern within the syntax limits passes the work limit over an 80-layer model's 560 module paths.
    const deep = parseModelConfig({ ...MODEL_JSON, num_hidden_layers: 80 });
    const costly = JSON.stringify({ peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: "(?:.?){100}".repeat(10) });
    expect((errorOf(() => parsePeftConfig(costly, deep, CONFIG_FILE)) as ModelFormatError).problem).toMatch(/is not accepted: matching the pattern takes more than 500000 state visits/);
    const long = errorOf(tampered({ config: (c) => (c.target_modules = "q".repeat(5000)) })) as ModelFormatError;
    expect(long.problem).toMatch(/^"target_modules" regex "q{119}\.\.\. is not accepted: the pattern has 5000 characters, above the limit of 1024$/);
  });

  it("refuses NaN and infinite weights, naming the tensor and the element", () => {
    for (const [value, shown] of [[Number.NaN, "NaN"], [Number.POSITIVE_INFINITY, "Infinity"], [Number.NEGATIVE_INFINITY, "-Infinity"]] as const) {
      const err = errorOf(tampered({
        tensors: (t) => {
          // lora_B of layer 1 v_proj is [out 16, rank 4]: element [2, 3] is index 11.
          t.get("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight")!.data[11] = value;
        },
      })) as ModelFormatError;
      expect(err).toBeInstanceOf(ModelFormatError);
      expect(err.file).toBe(WEIGHTS_FILE);
      expect(err.problem).toBe(`"base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight" holds a non-finite value (${shown}) at [2, 3]; LoRA weights must be finite`);
    }
  });

  it("refuses tensors for modules target_modules does not list", () => {
    const err = errorOf(tampered({ config: (c) => (c.target_modules = ["q_proj", "down_proj"]) }));
    expect(err.message).toMatch(/adapter_model\.safetensors: ".*v_proj\.lora_A\.weight" adapts v_proj, which .*adapter_config\.json does not list in target_modules \(q_proj, down_proj\)/);
  });

  it("refuses unknown module names and misplaced modules in tensor names", () => {
    const rename = (from: string, to: string) => (t: Map<string, Float32Tensor>) => {
      t.set(to, t.get(from)!);
      t.delete(from);
    };
    const unknown = tampered({ tensors: rename("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight") });
    expect(errorOf(unknown).message).toMatch(/unknown module "qkv_proj"/);
    const misplaced = tampered({ tensors: rename("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "base_model.model.model.layers.0.mlp.q_proj.lora_A.weight") });
    expect(errorOf(misplaced).message).toMatch(/q_proj belongs under self_attn, not mlp/);
    const foreign = tampered({ tensors: rename("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "model.layers.0.self_attn.q_proj.weight") });
    expect(errorOf(foreign).message).toMatch(/unexpected tensor "model\.layers\.0\.self_attn\.q_proj\.weight"/);
  });

  it("names a (layer, module) with A but no B", () => {
    const err = errorOf(tampered({ tensors: (t) => t.delete("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight") })) as ModelFormatError;
    expect(err.file).toBe(WEIGHTS_FILE);
    expect(err.problem).toBe("missing lora_B for layer 1 v_proj (base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight)");
  });

  it("refuses a layer index past the model's layers", () => {
    const extra = tampered({
      tensors: (t) => t.set("base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight", t.get("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")!),
    });
    expect(errorOf(extra).message).toMatch(/layers\.2\.self_attn\.q_proj\.lora_A\.weight": layer index 2 is out of range; the model has 2 layers/);
  });

  it("refuses an adapter trained for other in/out features", () => {
    const wider = parseModelConfig({ ...MODEL.raw, hidden_size: 64, intermediate_size: 48 });
    const { configJson, safetensors } = encodePeftAdapter(randomAdapter(wider, SETTINGS));
    expect(() => parsePeftAdapter(configJson, safetensors, MODEL, "wider")).toThrow(
      /wider\/adapter_model\.safetensors: ".*layers\.0\.self_attn\.q_proj\.lora_A\.weight" has 64 input features \(shape \[4, 64\]\) but the model's module takes 32; expected \[4, 32\]/,
    );
    const moreKv = parseModelConfig({ ...MODEL.raw, num_key_value_heads: 4 });
    const kv = encodePeftAdapter(randomAdapter(moreKv, SETTINGS));
    expect(() => parsePeftAdapter(kv.configJson, kv.safetensors, MODEL, "kv")).toThrow(/v_proj\.lora_B\.weight" has 32 output features .* gives 16; expected \[16, 4\]/);
  });

  it("refuses PEFT options that change what the tensors mean", () => {
    expect(errorOf(tampered({ config: (c) => (c.bias = "all") })).message).toMatch(/"bias": "all" is not supported/);
    expect(errorOf(tampered({ config: (c) => (c.use_dora = true) })).message).toMatch(/"use_dora": true is not supported/);
    expect(errorOf(tampered({ config: (c) => (c.layers_to_transform = [0]) })).message).toMatch(/"layers_to_transform": \[0\] is not supported/);
  });

  it("names malformed and missing files", () => {
    expect(() => parsePeftAdapter("{", new Uint8Array(), MODEL, "up")).toThrow(/up\/adapter_config\.json: malformed JSON/);
    expect(errorOf(tampered({ config: (c) => (c.r = 0) })).message).toMatch(/"r" must be a positive integer, got 0/);
    const dir = join(root, "half");
    writePeftAdapter(dir, randomAdapter(MODEL, SETTINGS));
    rmSync(join(dir, "adapter_model.safetensors"));
    writeFileSync(join(dir, "adapter_model.bin"), "");
    expect(() => readPeftAdapter(dir, MODEL)).toThrow(/adapter_model\.safetensors: missing.*adapter_model\.bin is not supported/);
    expect(() => readPeftAdapter(join(root, "none"), MODEL)).toThrow(/none: adapter directory does not exist/);
  });
});
