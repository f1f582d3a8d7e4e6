// A causal LM this project did not export: ONNX Runtime GenAI's tiny random Llama, with
// float16 logits and KV cache and com.microsoft operators (see ../shared/fixtures/README.md).
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CausalLmSession } from "./session.ts";
import { argmax, maxAbsDiff } from "./testing/compare.ts";

const dir = join(process.cwd(), "..", "shared", "fixtures", "ort-genai-tiny-random-llama-fp16");
const modelPath = join(dir, "model.onnx");
/** float16 logits carry about 3 decimal digits; paths through the cache round differently. */
const FP16_TOLERANCE = 2e-3;

describe.skipIf(!existsSync(modelPath))("ORT GenAI tiny random Llama (float16, needs ../shared)", () => {
  let session: CausalLmSession;
  beforeAll(async () => {
    session = await CausalLmSession.open(modelPath, { executionProvider: "cpu" });
  });
  afterAll(() => session.release());

  it("reads its I/O from the graph: 2 layers, 1x16 float16 KV, float16 logits", () => {
    expect(session.io).toEqual({ numLayers: 2, numKvHeads: 1, headDim: 16, kvType: "float16", logitsType: "float16", vocabSize: 32000, hasPositionIds: true, keepsLogits: false, hasLogProbs: false, kvOutputs: "present", lora: [] });
    expect(session.newCache().shape.kvType).toBe("float16");
  });

  it("greedy decoding with the cache picks what a full re-forward picks", async () => {
    const prompt = [1, 450, 4996, 17354, 1701];
    const cache = session.newCache();
    let [step] = await session.step([{ cache, tokens: prompt }]);
    const generated: number[] = [];
    const stepLogProbs = [step.logProbs];
    for (let i = 0; i < 6; i++) {
      generated.push(argmax(step.logProbs));
      [step] = await session.step([{ cache, tokens: [generated.at(-1)!] }]);
      stepLogProbs.push(step.logProbs);
    }
    expect(cache.length).toBe(prompt.length + generated.length);

    const V = 32000;
    const [full] = await session.step([{ cache: session.newCache(), tokens: [...prompt, ...generated], allPositions: true }]);
    for (const [i, logp] of stepLogProbs.entries()) {
      const reference = full.positionLogProbs!.subarray((prompt.length - 1 + i) * V, (prompt.length + i) * V);
      if (i < generated.length) expect(argmax(reference)).toBe(generated[i]);
      expect(maxAbsDiff(logp, reference)).toBeLessThan(FP16_TOLERANCE);
    }
    // Random weights, but not a constant prediction: the test would notice a stuck cache.
    expect(new Set(generated).size).toBeGreaterThan(1);
  });

  it("a left-padded batch equals each prompt alone", async () => {
    const prompts = [[1, 450, 4996, 17354, 1701], [1, 22, 33]];
    const batch = await session.step(prompts.map((tokens) => ({ cache: session.newCache(), tokens, allPositions: true })));
    for (const [b, tokens] of prompts.entries()) {
      const [single] = await session.step([{ cache: session.newCache(), tokens, allPositions: true }]);
      expect(maxAbsDiff(batch[b].positionLogProbs!, single.positionLogProbs!)).toBeLessThan(FP16_TOLERANCE);
    }
  });
});
