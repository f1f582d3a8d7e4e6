// A real pretrained model, not a random one: Karpathy's stories260K converted to the Hugging
// Face layout, exported to ONNX by our exporter, and greedy-decoded through our runtime with
// the KV cache must reproduce the continuation its README documents.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { convertLlama2c } from "#test/helpers/llama2c.ts";
import { exportOnnx } from "#inference/model/export.ts";
import { CausalLmSession } from "#inference/model/session.ts";
import { TextTokenizer } from "#core/formats/tokenizer.ts";
import { argmaxToken } from "#core/math/sampling.ts";

const fixture = resolve("../shared/fixtures/llama2c-stories260K");
const documented =
  "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball.";

describe.skipIf(!existsSync(fixture))("llama2c stories260K through export and the KV-cache runtime", () => {
  const dir = mkdtempSync(join(tmpdir(), "lr-stories-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("greedy decoding from BOS reproduces the documented text", async () => {
    convertLlama2c(join(fixture, "stories260K.bin"), join(fixture, "tok512.bin"), dir);
    const { onnxPath } = await exportOnnx({ modelDir: dir });
    const session = await CausalLmSession.open(onnxPath);
    const tokenizer = TextTokenizer.load(dir);
    const cache = session.newCache();
    const ids: number[] = [];
    let next = 1; // BOS
    while (ids.length < 60) {
      const [{ logProbs }] = await session.step([{ cache, tokens: [next] }]);
      next = argmaxToken(logProbs);
      ids.push(next);
    }
    const text = tokenizer.decode(ids, { skipSpecialTokens: true });
    expect(text.startsWith(documented), `decoded: ${JSON.stringify(text)}`).toBe(true);
    await session.release();
  });
});
