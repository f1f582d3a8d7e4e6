// Import and export of the reference scripts' sample format, one JSON object per line:
//   {"prompt_id": str, "step": int, "prefix": str, "tokens": [str], "token_ids": [int],
//    "weights": [float], "kl_divergence": float}
// where prompt_id is the question text and prefix the completion text before the step.
//
// Import cannot be token-exact: the format keeps the prefix as decoded text, and encoding
// text again need not give the tokens the expert wrote (the "prefix drift" METHOD.md lists).
// The best available is what we do: the question is rendered with the chat template and the
// system prompt and encoded exactly as the inference server encodes a ChatPrompt, the prefix
// is encoded on its own (no special tokens) and appended, so prompt ids match a served
// trajectory and only the prefix text is re-encoded. Samples of one question whose encoded
// prefixes extend one another become one trajectory with a target at each of their
// positions; any other sample becomes a trajectory of its own.
import { readFileSync, writeFileSync } from "node:fs";
import type { TextTokenizer } from "#core/formats/tokenizer.ts";
import { ModelFormatError } from "#core/model/errors.ts";
import { problemId } from "#core/tasks/problems.ts";
import { SYSTEM_PROMPT, encodeChatPrompt } from "#trainer/sampling/prompt.ts";
import { SampleFileError } from "./errors.ts";
import { STORE_FORMAT_VERSION } from "./records.ts";
import type { SelectedStep, TrajectoryRecord } from "./records.ts";

/** One line of the reference's sample file. */
export interface PaperSample {
  prompt_id: string;
  step: number;
  prefix: string;
  tokens: string[];
  token_ids: number[];
  weights: number[];
  kl_divergence: number;
}

/** A parsed line and where it came from. */
export interface PaperSampleLine {
  line: number;
  sample: PaperSample;
}

/** How far the sum of an imported v_C may stray from 1 (the reference writes float32 weights). */
const WEIGHT_SUM_TOLERANCE = 1e-3;

/** Parses the text of a sample file; every line must hold a well-formed sample. */
export function parsePaperSamples(text: string, file: string): PaperSampleLine[] {
  const out: PaperSampleLine[] = [];
  text.split("\n").forEach((raw, i) => {
    if (raw.trim() === "") return;
    out.push({ line: i + 1, sample: parseSample(raw, file, i + 1) });
  });
  if (out.length === 0) throw new ModelFormatError(file, "holds no samples (every line is empty)");
  return out;
}

export function readPaperSamples(file: string): PaperSampleLine[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new ModelFormatError(file, `cannot read the sample file (${(err as Error).message})`);
  }
  return parsePaperSamples(text, file);
}

function parseSample(raw: string, file: string, line: number): PaperSample {
  const fail = (field: string | null, detail: string): never => {
    throw new SampleFileError(file, line, field, detail);
  };
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (err) {
    return fail(null, `is not valid JSON (${(err as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return fail(null, "must be a JSON object");
  const r = value as Record<string, unknown>;
  if (typeof r.prompt_id !== "string" || r.prompt_id.trim() === "") fail("prompt_id", "must be a non-empty string (the question text)");
  if (!Number.isInteger(r.step) || (r.step as number) < 0) fail("step", `must be an integer >= 0, got ${JSON.stringify(r.step)}`);
  if (typeof r.prefix !== "string") fail("prefix", "must be a string");
  const ids = r.token_ids;
  if (!Array.isArray(ids) || ids.length === 0 || !ids.every((id) => Number.isInteger(id) && id >= 0)) fail("token_ids", "must be a non-empty list of token ids (integers >= 0)");
  const weights = r.weights;
  if (!Array.isArray(weights) || !weights.every((w) => typeof w === "number" && Number.isFinite(w) && w >= 0)) fail("weights", "must be a list of finite numbers >= 0");
  if ((weights as number[]).length !== (ids as number[]).length) fail("weights", `has ${(weights as number[]).length} entries for ${(ids as number[]).length} token_ids`);
  const sum = (weights as number[]).reduce((a, w) => a + w, 0);
  if (Math.abs(sum - 1) > WEIGHT_SUM_TOLERANCE) fail("weights", `must sum to 1 (a soft label), sums to ${sum}`);
  if (new Set(ids as number[]).size !== (ids as number[]).length) fail("token_ids", "must not repeat an id");
  const tokens = r.tokens;
  if (!Array.isArray(tokens) || !tokens.every((t) => typeof t === "string")) fail("tokens", "must be a list of strings");
  if ((tokens as string[]).length !== (ids as number[]).length) fail("tokens", `has ${(tokens as string[]).length} entries for ${(ids as number[]).length} token_ids`);
  if (typeof r.kl_divergence !== "number" || !Number.isFinite(r.kl_divergence)) fail("kl_divergence", "must be a finite number");
  return r as unknown as PaperSample;
}

export interface PaperImportOptions {
  /** The expert's tokenizer, with its chat template. */
  tokenizer: TextTokenizer;
  /** Default: the reference's "Please reason step by step.". */
  systemPrompt?: string;
  /** Ids must be below this (default: the tokenizer's size). */
  vocabSize?: number;
  /** Names the source in errors. */
  file?: string;
}

export interface PaperImport {
  /** Store records of kind "imported", one per trajectory, ready for SampleStore.append. */
  records: TrajectoryRecord[];
  samples: number;
  questions: number;
  /** Samples whose re-encoded prefix has a different token count than their step: visible prefix drift. */
  driftedSamples: number;
}

interface EncodedSample {
  line: number;
  sample: PaperSample;
  prefixIds: number[];
}

/** Turns parsed samples into trajectory records (see the module comment for how). */
export function importPaperSamples(lines: PaperSampleLine[], options: PaperImportOptions): PaperImport {
  const { tokenizer, systemPrompt = SYSTEM_PROMPT, vocabSize = tokenizer.vocabSize, file = "samples" } = options;
  const byQuestion = new Map<string, EncodedSample[]>();
  let driftedSamples = 0;
  for (const { line, sample } of lines) {
    sample.token_ids.forEach((id, j) => {
      if (id >= vocabSize) throw new SampleFileError(file, line, "token_ids", `entry ${j} = ${id} is outside the expert's vocabulary [0, ${vocabSize})`);
    });
    const prefixIds = sample.prefix === "" ? [] : tokenizer.encode(sample.prefix, { addSpecialTokens: false });
    if (prefixIds.length !== sample.step) driftedSamples++;
    const group = byQuestion.get(sample.prompt_id) ?? [];
    group.push({ line, sample, prefixIds });
    byQuestion.set(sample.prompt_id, group);
  }
  const records: TrajectoryRecord[] = [];
  for (const [question, group] of byQuestion) {
    const promptTokenIds = encodeChatPrompt(tokenizer, question, systemPrompt);
    const id = problemId(question);
    nestedChains(group).forEach((chain, k) => records.push(importedRecord(k === 0 ? id : `${id}:${k}`, question, promptTokenIds, chain, tokenizer)));
  }
  return { records, samples: lines.length, questions: byQuestion.size, driftedSamples };
}

/** Groups samples into chains whose prefixes strictly extend one another (each chain shortest first). */
function nestedChains(group: EncodedSample[]): EncodedSample[][] {
  const ordered = [...group].sort((a, b) => a.prefixIds.length - b.prefixIds.length || a.line - b.line);
  const chains: EncodedSample[][] = [];
  for (const s of ordered) {
    const chain = chains.find((c) => {
      const last = c[c.length - 1].prefixIds;
      return last.length < s.prefixIds.length && last.every((id, i) => s.prefixIds[i] === id);
    });
    if (chain) chain.push(s);
    else chains.push([s]);
  }
  // Numbered in file order of their first line, so ids do not depend on prefix lengths.
  const firstLine = (c: EncodedSample[]) => Math.min(...c.map((s) => s.line));
  return chains.sort((a, b) => firstLine(a) - firstLine(b));
}

function importedRecord(id: string, question: string, promptTokenIds: number[], chain: EncodedSample[], tokenizer: TextTokenizer): TrajectoryRecord {
  const completionTokenIds = chain[chain.length - 1].prefixIds;
  const selected: SelectedStep[] = chain.map(({ sample, prefixIds }) => ({
    step: prefixIds.length,
    kl: sample.kl_divergence,
    ids: [...sample.token_ids],
    weights: [...sample.weights],
    sourceStep: sample.step,
  }));
  return {
    v: STORE_FORMAT_VERSION,
    kind: "imported",
    problemId: id,
    question,
    promptTokenIds,
    completionTokenIds,
    completionText: tokenizer.decode(completionTokenIds),
    adapterVersion: "",
    finishReason: "imported",
    seed: null,
    attempts: 1,
    stepsSeen: 0,
    stepKls: [],
    selected,
    answer: { predicted: null, reference: null, correct: null },
  };
}

/** The reference's lines for stored records: one per selected sample, its prefix decoded from the exact ids. */
export function exportPaperSamples(records: Iterable<TrajectoryRecord>, tokenizer: TextTokenizer): PaperSample[] {
  const out: PaperSample[] = [];
  for (const record of records) {
    for (const s of record.selected) {
      out.push({
        prompt_id: record.question,
        step: s.sourceStep ?? s.step,
        prefix: tokenizer.decode(record.completionTokenIds.slice(0, s.step)),
        tokens: s.ids.map((id) => tokenizer.decodeToken(id)),
        token_ids: [...s.ids],
        weights: [...s.weights],
        kl_divergence: s.kl,
      });
    }
  }
  return out;
}

/** Writes exported samples as JSON lines; returns how many were written. */
export function writePaperSamples(file: string, records: Iterable<TrajectoryRecord>, tokenizer: TextTokenizer): number {
  const samples = exportPaperSamples(records, tokenizer);
  writeFileSync(file, samples.map((s) => `${JSON.stringify(s)}\n`).join(""));
  return samples.length;
}
