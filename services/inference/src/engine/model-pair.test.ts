// Opening the served pair: a directory without a tokenizer fails before any session is built,
// a fingerprint is hashed only once what it waits for has settled (the pair's sessions, then
// the expert's hash), both still equal the synchronous fingerprint, and each stage's time is
// logged. Runs on the tiny random pair that init-model writes.
import { copyFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { modelFingerprint } from "#core/formats/model-dir.ts";
import { ModelFormatError } from "#core/model/errors.ts";
import { writeTinyPair } from "#test/inference/helpers.ts";
import type { TinyPair } from "#test/inference/helpers.ts";
import { openModelPair } from "./model-pair.ts";
import { openModelSession, withTokenizer } from "./served-model.ts";

let pair: TinyPair;
beforeAll(() => {
  pair = writeTinyPair();
  // init-model writes each model its own tokenizer files; the same bytes let the amateur borrow the expert's.
  for (const name of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(pair.expertDir, name), join(pair.amateurDir, name));
});
afterAll(() => pair?.remove());

describe("openModelPair", () => {
  it("logs each stage, shares the tokenizer and gives both fingerprints", async () => {
    const lines: string[] = [];
    const opened = await openModelPair(pair.expertDir, pair.amateurDir, { executionProvider: "cpu", log: (line) => lines.push(line) });
    try {
      expect(lines.some((l) => /^expert: graph built in \d+ ms, ONNX Runtime session opened in \d+ ms$/.test(l))).toBe(true);
      expect(lines.some((l) => /^amateur: graph built in \d+ ms/.test(l))).toBe(true);
      expect(lines).toContain("amateur: tokenizer shared with the expert");
      expect(opened.amateur.tokenizer).toBe(opened.expert.tokenizer);
      // Only the expert is ever adapted: the amateur's graph has no LoRA inputs to feed every step.
      expect(opened.expert.session.takesAdapters).toBe(true);
      expect(opened.amateur.session.takesAdapters).toBe(false);
      expect(opened.amateur.session.io.lora).toEqual([]);
      expect(await opened.expert.fingerprint).toBe(modelFingerprint(pair.expertDir));
      expect(await opened.amateur.fingerprint).toBe(modelFingerprint(pair.amateurDir));
    } finally {
      await Promise.all([opened.expert.session.release(), opened.amateur.session.release()]);
    }
  });

  it("refuses a directory without tokenizer.json before building its session, and releases the expert's", async () => {
    const broken = writeTinyPair();
    try {
      rmSync(join(broken.amateurDir, "tokenizer.json"));
      // Weights ONNX Runtime could not read: the tokenizer check must come first to name the tokenizer.
      writeFileSync(join(broken.amateurDir, "model.safetensors"), "not safetensors");
      const started = openModelPair(broken.expertDir, broken.amateurDir, { executionProvider: "cpu" });
      await expect(started).rejects.toBeInstanceOf(ModelFormatError);
      await expect(started).rejects.toThrow(/amateur[/\\]tokenizer\.json.*missing: the model directory needs a tokenizer\.json/);
    } finally {
      broken.remove();
    }
  });
});

describe("openModelSession", () => {
  it("hashes the fingerprint only once the model it waits for is hashed", async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const opened = await openModelSession("amateur", pair.amateurDir, { executionProvider: "cpu" }, gate);
    try {
      let settled = false;
      const fingerprint = opened.fingerprint.then((f) => ((settled = true), f));
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(settled).toBe(false);
      release();
      expect(await fingerprint).toBe(modelFingerprint(pair.amateurDir));
      // A failed predecessor does not stop this model's hashing.
      const afterFailure = await openModelSession("amateur", pair.amateurDir, { executionProvider: "cpu" }, Promise.reject(new Error("expert hash failed")));
      try {
        expect(await afterFailure.fingerprint).toBe(modelFingerprint(pair.amateurDir));
      } finally {
        await afterFailure.session.release();
      }
      expect(withTokenizer(opened, {}).vocabSize).toBe(384);
    } finally {
      await opened.session.release();
    }
  });
});
