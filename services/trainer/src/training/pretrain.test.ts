import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadModelDir } from "#core/formats/model-dir.ts";
import { TextTokenizer } from "#core/formats/tokenizer.ts";
import { logSoftmax } from "#core/math/distribution.ts";
import { parseModelConfig } from "#core/model/config.ts";
import { randomWeightSources } from "#core/model/init-model.ts";
import { ModelFormatError } from "#core/model/errors.ts";
import { buildWorldData } from "#world/build-data.ts";
import { writeWorldTokenizer } from "#world/tokenizer.ts";
import { CausalLM } from "#trainer/model/transformer.ts";
import { TrainingConfigError } from "./errors.ts";
import type { PretrainOptions } from "./pretrain.ts";
import { PRETRAIN_LOG_FILE, pretrain } from "./pretrain.ts";
import type { ChatSequences } from "./pretrain-data.ts";
import { readChatSequences } from "./pretrain-data.ts";
import type { StepEvent } from "./training-loop.ts";

const scratch = mkdtempSync(join(tmpdir(), "pretrain-"));
const tokenizerDir = join(scratch, "tokenizer");
let data: ChatSequences;
let tokenizer: TextTokenizer;
const shape = { model_type: "llama", vocab_size: 105, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, tie_word_embeddings: true, max_position_embeddings: 256 };
const settings = { batchSize: 4, maxSteps: 6, warmupSteps: 2, learningRate: 1e-2, checkpointEverySteps: 2, seed: 5 };
let dirs = 0;
const freshDir = () => join(scratch, `out-${dirs++}`);

beforeAll(() => {
  writeWorldTokenizer(tokenizerDir);
  buildWorldData({ outDir: join(scratch, "world"), trainCount: 16, testCount: 1, seed: 1 });
  tokenizer = TextTokenizer.load(tokenizerDir);
  data = readChatSequences(join(scratch, "world", "train.jsonl"), tokenizer, { seqLen: 256 });
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const run = (extra: Partial<PretrainOptions> = {}) =>
  pretrain({ start: { configJson: shape }, sequences: data.sequences, tokenizerDir, outDir: freshDir(), config: settings, ...extra });

describe("readChatSequences", () => {
  it("renders each problem through the chat template, the prompt a token-exact prefix", () => {
    expect(data.sequences.length).toBe(16);
    const first = data.sequences[0];
    const text = tokenizer.decode(first.tokenIds);
    expect(text.startsWith("<|bos|><|system|>\nPlease reason step by step.\n<|user|>\n")).toBe(true);
    expect(tokenizer.decode(first.tokenIds.slice(0, first.promptLength)).endsWith("<|assistant|>\n")).toBe(true);
    expect(text.endsWith("<|eos|>")).toBe(true);
    expect(data.tokens).toBe(data.sequences.reduce((n, s) => n + s.tokenIds.length, 0));
  });

  it("cuts long sequences and refuses files without worked answers", () => {
    const cut = readChatSequences(join(scratch, "world", "train.jsonl"), tokenizer, { seqLen: 40 });
    expect(cut.truncated).toBe(16);
    expect(cut.sequences.every((s) => s.tokenIds.length === 40)).toBe(true);
    const prompts = join(scratch, "prompts.jsonl");
    writeFileSync(prompts, `${JSON.stringify({ prompt: "Tom has 2 apples." })}\n`);
    expect(() => readChatSequences(prompts, tokenizer, { seqLen: 64 })).toThrow(ModelFormatError);
    expect(() => readChatSequences(prompts, tokenizer, { seqLen: 64 })).toThrow(/needs worked answers/);
  });
});

describe("pretrain", () => {
  it("three pieces of two steps equal six straight, and the output is a complete model directory", async () => {
    const straight = await run();
    expect(straight).toMatchObject({ stoppedBy: "max-steps", finished: true, resumedFrom: null });
    const out = freshDir();
    const pieces = [];
    for (let i = 0; i < 3; i++) pieces.push(await run({ outDir: out, stopAfterSteps: 2 }));
    expect(pieces.map((p) => [p.resumedFrom, p.progress.step, p.finished])).toEqual([[null, 2, false], [2, 4, false], [4, 6, true]]);
    expect(readFileSync(join(out, "model.safetensors")).equals(readFileSync(join(straight.outDir, "model.safetensors")))).toBe(true);
    expect(pieces[2].lossHistory).toEqual(straight.lossHistory);

    const model = loadModelDir(out);
    expect(model.config).toMatchObject({ modelType: "llama", vocabSize: 105, numLayers: 2 });
    expect(model.config.raw).toMatchObject({ architectures: ["LlamaForCausalLM"], bos_token_id: tokenizer.bosTokenId, eos_token_id: tokenizer.eosTokenId });
    expect(TextTokenizer.load(out).vocabSize).toBe(105);
    expect(JSON.parse(readFileSync(join(out, "generation_config.json"), "utf8"))).toMatchObject({ eos_token_id: tokenizer.eosTokenId });
    const log = JSON.parse(readFileSync(join(out, PRETRAIN_LOG_FILE), "utf8"));
    expect(log).toMatchObject({ finished: true, steps: 6, tfjsBackend: straight.backend!.kind });
    expect(log.lossHistory.length).toBe(6);
    expect(existsSync(join(out, "checkpoints"))).toBe(false); // removed once finished
    // Running the finished command again trains nothing.
    const again = await run({ outDir: out });
    expect(again).toMatchObject({ alreadyFinished: true, finished: true });
    await expect(run({ outDir: out, config: { ...settings, learningRate: 5e-3 } })).rejects.toThrow(/holds a finished pretraining run with other settings/);
    // Same settings, other data (a rebuilt world): not mistaken for the finished run.
    await expect(run({ outDir: out, sequences: data.sequences.slice(1) })).rejects.toThrow(/holds a finished pretraining run on other data/);
  });

  it("does not resume a checkpoint written while training on other data", async () => {
    const out = freshDir();
    await run({ outDir: out, stopAfterSteps: 2 });
    await expect(run({ outDir: out, sequences: data.sequences.slice(1) })).rejects.toThrow(/was written while training on other data/);
  });

  it("the first loss is the mean next-token cross-entropy over real tokens, padding excluded", async () => {
    for (const completionOnly of [false, true]) {
      const events: StepEvent[] = [];
      const out = freshDir();
      // Every sequence in one padded batch (their lengths differ), one step.
      await run({ outDir: out, config: { ...settings, batchSize: 16, maxSteps: 1, warmupSteps: 0, completionOnly }, onStep: (e) => void events.push(e) });
      // The loss is taken before the update, at the seed's initial weights.
      const config = parseModelConfig(shape);
      const model = new CausalLM(config, new Map(randomWeightSources(config, settings.seed).map((s) => [s.name, { shape: s.shape, data: s.data() }])));
      let sum = 0;
      let count = 0;
      for (const s of data.sequences) {
        const logits = model.forward([[...s.tokenIds]]).dataSync();
        for (let p = completionOnly ? s.promptLength : 1; p < s.tokenIds.length; p++) {
          sum -= logSoftmax(logits, (p - 1) * 105, 105)[s.tokenIds[p]];
          count++;
        }
      }
      model.dispose();
      expect(events[0].tunedTokens).toBe(count);
      // The last token of a sequence is a label only, never an input.
      expect(events[0].tokens).toBe(data.tokens - data.sequences.length);
      expect(events[0].loss).toBeCloseTo(sum / count, 4);
    }
  });

  it("learns: the loss falls well below its start", async () => {
    const result = await run({ config: { ...settings, maxSteps: 40, checkpointEverySteps: 0 } });
    const losses = result.lossHistory.map(([, l]) => l);
    expect(losses[0]).toBeGreaterThan(4); // about ln(105) at a random start
    expect(Math.min(...losses.slice(-5))).toBeLessThan(0.6 * losses[0]);
    expect(result.tokensPerSecond).toBeGreaterThan(0);
  });

  it("continues from an existing model directory", async () => {
    const first = await run();
    const next = await run({ start: { modelDir: first.outDir }, config: { ...settings, maxSteps: 2, warmupSteps: 0 } });
    expect(next.lossHistory[0][1]).toBeLessThan(first.lossHistory[0][1]);
  });

  it("refuses a vocabulary smaller than the tokenizer's, token ids that contradict it, and a resume under other settings", async () => {
    await expect(run({ start: { configJson: { ...shape, vocab_size: 100 } } })).rejects.toThrow(TrainingConfigError);
    await expect(run({ start: { configJson: { ...shape, vocab_size: 100 } } })).rejects.toThrow(/vocab_size: is 100 in config.json, but the tokenizer .* has 105 tokens/);
    await expect(run({ start: { configJson: { ...shape, eos_token_id: 7 } } })).rejects.toThrow(/eos_token_id: is 7 in config.json, but the tokenizer's is 2/);
    const out = freshDir();
    await run({ outDir: out, stopAfterSteps: 1 });
    await expect(run({ outDir: out, config: { ...settings, batchSize: 8 } })).rejects.toThrow(/batchSize: is 8, but the checkpoint/);
    await expect(run({ outDir: out, start: { configJson: { ...shape, hidden_size: 64 } } })).rejects.toThrow(/another config.json/);
  });
});
