// Greedy accuracy through the inference service's Generate, expert and amateur, spread over
// two endpoints, with verdicts that pair up for a before/after interval.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "#core/grpc/adapter.ts";
import { GenerationMode, InferenceService } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { pairedDifferenceInterval } from "#core/math/accuracy.ts";
import { extractAnswer } from "#core/tasks/answers.ts";
import { parseProblems } from "#core/tasks/problems.ts";
import type { Problem } from "#core/tasks/problems.ts";
import type { InferenceServer } from "#inference/main.ts";
import { evaluate } from "#trainer/eval/evaluate.ts";
import type { EvalRecord } from "#trainer/eval/evaluate.ts";
import { EndpointPool } from "#trainer/sampling/endpoint-pool.ts";
import { chatPrompt } from "#trainer/sampling/prompt.ts";
import { startServer, writeTinyPair } from "./helpers.ts";
import type { TinyPair } from "./helpers.ts";

let pair: TinyPair;
let servers: InferenceServer[];
let pool: EndpointPool;
let dir: string;

beforeAll(async () => {
  pair = writeTinyPair();
  servers = await Promise.all([startServer(pair), startServer(pair)]);
  pool = await EndpointPool.connect({ targets: servers.map((s) => s.address), expertDir: pair.expertDir });
  dir = mkdtempSync(join(tmpdir(), "lr-eval-"));
});
afterAll(async () => {
  pool?.close();
  await Promise.all(servers.map((s) => s.close(1000)));
  pair?.remove();
  rmSync(dir, { recursive: true, force: true });
});

/** The greedy answer of `mode` to a question, asked directly. */
async function greedyOutput(question: string, mode: GenerationMode, maxNewTokens: number): Promise<string> {
  const client = createClient(InferenceService, servers[0].address);
  try {
    let text = "";
    for await (const m of client.generate({ prompt: chatPrompt(question), sampling: { temperature: 0, maxNewTokens }, mode })) if (m.event.case === "chunk") text += m.event.value.text;
    return text;
  } finally {
    client.close();
  }
}

/**
 * Problems whose references are made from the expert's own greedy answers: for the even ones
 * the reference is what it answers (right), for the odd ones that plus one (wrong). A random
 * model's answer is whatever number it happens to write, so the references are chosen after.
 */
async function problemsWithKnownVerdicts(count: number, maxNewTokens: number): Promise<{ problems: Problem[]; expected: boolean[] }> {
  const lines: string[] = [];
  const expected: boolean[] = [];
  for (let i = 0; lines.length < count && i < 200; i++) {
    const question = `Sam has ${i} marbles and finds 3 more. How many now?`;
    const predicted = extractAnswer(await greedyOutput(question, GenerationMode.EXPERT, maxNewTokens));
    if (predicted === null) continue;
    const right = lines.length % 2 === 0;
    lines.push(JSON.stringify({ prompt: question, answer: right ? predicted : predicted + 1 }));
    expected.push(right);
  }
  expect(lines.length).toBe(count);
  return { problems: parseProblems(lines.join("\n"), "eval.jsonl").problems, expected };
}

describe("greedy evaluation through Generate", () => {
  it("scores each problem in order, over both endpoints, and pairs with another evaluation", async () => {
    const { problems, expected } = await problemsWithKnownVerdicts(8, 40);
    const seen: EvalRecord[] = [];
    const result = await evaluate({ pool, problems, maxNewTokens: 40, concurrency: 2, onRecord: (r) => seen.push(r) });
    expect(result.perProblem).toEqual(expected);
    expect(result).toMatchObject({ mode: "expert", problems: 8, correct: 4, accuracy: 0.5, adapterVersions: [""] });
    expect(result.records.map((r) => r.problemId)).toEqual(problems.map((p) => p.id));
    expect(new Set(seen.map((r) => r.lane))).toEqual(new Set(servers.map((s) => s.address)));
    for (const r of result.records) {
      expect(r.output).toBe(await greedyOutput(r.question, GenerationMode.EXPERT, 40));
      expect(r.completionTokens).toBeGreaterThan(0);
    }

    const amateur = await evaluate({ pool, problems, mode: "amateur", maxNewTokens: 40 });
    expect(amateur.mode).toBe("amateur");
    for (const r of amateur.records) expect(r.output).toBe(await greedyOutput(r.question, GenerationMode.AMATEUR, 40));
    const gain = pairedDifferenceInterval(amateur.perProblem, result.perProblem);
    expect(gain.n).toBe(8);
    expect(gain.estimate).toBeCloseTo((result.correct - amateur.correct) / 8, 12);
  });

  it("refuses problems without a reference and settings outside the endpoints' limits", async () => {
    const unlabelled = parseProblems(JSON.stringify({ prompt: "Say something." }), "eval.jsonl").problems;
    await expect(evaluate({ pool, problems: unlabelled })).rejects.toThrow(/eval_problems: the problem on line 1 has no reference answer/);
    const labelled = parseProblems(JSON.stringify({ prompt: "1 + 1?", answer: 2 }), "eval.jsonl").problems;
    await expect(evaluate({ pool, problems: labelled, maxNewTokens: 100_000 })).rejects.toThrow(/eval\.max_new_tokens: must be an integer in \[1, 1024\]/);
  });

  it("asks the other endpoint when one goes away", async () => {
    const extra = await startServer(pair);
    const local = await EndpointPool.connect({ targets: [servers[0].address, extra.address], downForMs: 200 });
    try {
      const problems = parseProblems(Array.from({ length: 12 }, (_, i) => JSON.stringify({ prompt: `What is ${i} + ${i}?`, answer: 2 * i })).join("\n"), "eval.jsonl").problems;
      const baseline = await evaluate({ pool: local, problems, maxNewTokens: 48, concurrency: 2 });
      let answered = 0;
      let closing: Promise<void> | null = null;
      const again = await evaluate({ pool: local, problems, maxNewTokens: 48, concurrency: 2, onRecord: () => ++answered === 3 && (closing = extra.close(0)) });
      await closing;
      expect(again.records.map((r) => r.output)).toEqual(baseline.records.map((r) => r.output));
      expect(local.lanes.find((l) => l.id === extra.address)!.lastError).not.toBeNull();
    } finally {
      local.close();
      await extra.close(0);
    }
  });
});
