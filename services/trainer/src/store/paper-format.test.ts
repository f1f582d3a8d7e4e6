import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { buildSyntheticTokenizer } from "#core/formats/synthetic-tokenizer.ts";
import { TextTokenizer } from "#core/formats/tokenizer.ts";
import { problemId } from "#core/tasks/problems.ts";
import { encodeChatPrompt } from "#trainer/sampling/prompt.ts";
import { SampleFileError } from "./errors.ts";
import { exportPaperSamples, importPaperSamples, parsePaperSamples, writePaperSamples } from "./paper-format.ts";
import type { TrajectoryRecord } from "./records.ts";
import { recordSamples, recordTrajectory } from "./records.ts";

const synthetic = buildSyntheticTokenizer({ vocabSize: 512, addBos: false, source: "test/config.json" });
const tokenizer = TextTokenizer.fromObjects(synthetic.tokenizerJson, synthetic.tokenizerConfig, "test/tokenizer.json");

const QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?";

const line = (fields: Record<string, unknown>) =>
  JSON.stringify({ prompt_id: QUESTION, step: 0, prefix: "", tokens: ["x"], token_ids: [5], weights: [1], kl_divergence: 0.5, ...fields });

describe("reading the reference's sample format", () => {
  it("names the line and field of a malformed sample", () => {
    const cases: [string, RegExp][] = [
      ["{oops", /s\.jsonl:2: is not valid JSON/],
      [line({ prompt_id: "" }), /s\.jsonl:2: "prompt_id" must be a non-empty string/],
      [line({ step: -1 }), /:2: "step" must be an integer >= 0, got -1/],
      [line({ weights: [0.5] }), /:2: "weights" must sum to 1 \(a soft label\), sums to 0\.5/],
      [line({ token_ids: [5, 6], tokens: ["a", "b"] }), /:2: "weights" has 1 entries for 2 token_ids/],
      [line({ tokens: [] }), /:2: "tokens" has 0 entries for 1 token_ids/],
      [line({ kl_divergence: "big" }), /:2: "kl_divergence" must be a finite number/],
      [line({ token_ids: [5, 5], tokens: ["a", "a"], weights: [0.5, 0.5] }), /:2: "token_ids" must not repeat an id/],
    ];
    for (const [bad, message] of cases) {
      const text = `${line({})}\n${bad}\n`;
      expect(() => parsePaperSamples(text, "s.jsonl"), bad).toThrow(SampleFileError);
      expect(() => parsePaperSamples(text, "s.jsonl"), bad).toThrow(message);
    }
  });

  it("refuses ids outside the expert's vocabulary", () => {
    const lines = parsePaperSamples(line({ token_ids: [600] }), "s.jsonl");
    expect(() => importPaperSamples(lines, { tokenizer, file: "s.jsonl" })).toThrow(/s\.jsonl:1: "token_ids" entry 0 = 600 is outside the expert's vocabulary \[0, 512\)/);
  });

  it("joins samples of a question whose prefixes nest into one trajectory, and keeps the rest apart", () => {
    const a = "First, 3 + 4";
    const b = `${a} = 7.`;
    const idsA = tokenizer.encode(a, { addSpecialTokens: false });
    const idsB = tokenizer.encode(b, { addSpecialTokens: false });
    expect(idsB.slice(0, idsA.length)).toEqual(idsA); // the hand-made prefixes really nest in token space
    const text = [
      line({ step: idsB.length, prefix: b, token_ids: [7, 8], tokens: ["7", "8"], weights: [0.6, 0.4], kl_divergence: 1.5 }),
      line({ step: idsA.length, prefix: a, token_ids: [9], tokens: ["9"], weights: [1], kl_divergence: 0.9 }),
      // Same question, a prefix that is not an extension of the others: a trajectory of its own.
      line({ step: 99, prefix: "Second", token_ids: [3], tokens: ["3"], weights: [1], kl_divergence: 0.7 }),
      line({ prompt_id: "Other question?", step: 0, prefix: "", token_ids: [4], tokens: ["4"], weights: [1], kl_divergence: 2 }),
    ].join("\n");
    const imported = importPaperSamples(parsePaperSamples(text, "s.jsonl"), { tokenizer });
    expect(imported.samples).toBe(4);
    expect(imported.questions).toBe(2);
    expect(imported.records.map((r) => r.problemId)).toEqual([problemId(QUESTION), `${problemId(QUESTION)}:1`, problemId("Other question?")]);

    const [nested, apart, other] = imported.records;
    const prompt = encodeChatPrompt(tokenizer, QUESTION);
    expect(nested.promptTokenIds).toEqual(prompt);
    expect(nested.completionTokenIds).toEqual(idsB);
    expect(nested.selected).toEqual([
      { step: idsA.length, kl: 0.9, ids: [9], weights: [1], sourceStep: idsA.length },
      { step: idsB.length, kl: 1.5, ids: [7, 8], weights: [0.6, 0.4], sourceStep: idsB.length },
    ]);
    // One forward over prompt + longer prefix gives both targets' logits.
    expect(recordTrajectory(nested)).toEqual({
      problemId: problemId(QUESTION),
      tokenIds: [...prompt, ...idsB],
      promptLength: prompt.length,
      targets: [
        { position: prompt.length + idsA.length, ids: [9], weights: [1] },
        { position: prompt.length + idsB.length, ids: [7, 8], weights: [0.6, 0.4] },
      ],
      adapterVersion: "",
    });
    expect(apart.selected.map((s) => s.ids)).toEqual([[3]]);
    expect(other.completionTokenIds).toEqual([]);
    expect(other.selected[0].step).toBe(0);
    // "Second" re-encodes to a few tokens, not the 99 its line claims: the one visible drift.
    expect(apart.selected[0]).toMatchObject({ step: tokenizer.encode("Second", { addSpecialTokens: false }).length, sourceStep: 99 });
    expect(imported.driftedSamples).toBe(1);
  });

  it("renders the prompt with the chat template and the method's system prompt", () => {
    const rendered = tokenizer.decode(encodeChatPrompt(tokenizer, "What is 2 + 2?"));
    expect(rendered).toBe("<|im_start|>system\nPlease reason step by step.<|im_end|>\n<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n");
  });
});

describe("exporting to the reference's format", () => {
  const question = "A farm has 12 cows and 7 pigs. How many animals?";
  const completion = tokenizer.encode(" There are 12 + 7 = 19 animals. #### 19", { addSpecialTokens: false });
  const record: TrajectoryRecord = {
    v: 1,
    kind: "trajectory",
    problemId: problemId(question),
    question,
    promptTokenIds: encodeChatPrompt(tokenizer, question),
    completionTokenIds: completion,
    completionText: tokenizer.decode(completion),
    adapterVersion: "abc",
    finishReason: "eos",
    seed: 3,
    attempts: 1,
    stepsSeen: completion.length,
    stepKls: completion.map((_, i) => i / 10),
    selected: [
      { step: 0, kl: 0.7, ids: [40, 41], weights: [0.9, 0.1] },
      { step: 3, kl: 1.25, ids: [42], weights: [1] },
      { step: 5, kl: 0.5, ids: [43, 44, 45], weights: [0.5, 0.25, 0.25] },
    ],
    answer: { predicted: 19, reference: 19, correct: true },
  };

  it("writes one line per selected sample with the decoded prefix", () => {
    const samples = exportPaperSamples([record], tokenizer);
    expect(samples).toHaveLength(3);
    expect(samples[1]).toEqual({
      prompt_id: question,
      step: 3,
      prefix: tokenizer.decode(completion.slice(0, 3)),
      tokens: [tokenizer.decodeToken(42)],
      token_ids: [42],
      weights: [1],
      kl_divergence: 1.25,
    });
    expect(Object.keys(samples[0])).toEqual(["prompt_id", "step", "prefix", "tokens", "token_ids", "weights", "kl_divergence"]);
  });

  it("round-trips: export then import gives back the same samples on the same token ids", () => {
    const dir = mkdtempSync(join(tmpdir(), "lr-paper-"));
    try {
      const file = join(dir, "samples.jsonl");
      expect(writePaperSamples(file, [record], tokenizer)).toBe(3);
      const imported = importPaperSamples(parsePaperSamples(readFileSync(file, "utf8"), file), { tokenizer });
      expect(imported.driftedSamples).toBe(0);
      expect(imported.records).toHaveLength(1);
      const strip = (s: ReturnType<typeof recordSamples>[number]) => ({ ...s, adapterVersion: "" });
      expect(recordSamples(imported.records[0])).toEqual(recordSamples(record).map(strip));
      // And exporting the import writes the very same lines again.
      expect(exportPaperSamples(imported.records, tokenizer)).toEqual(exportPaperSamples([record], tokenizer));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
