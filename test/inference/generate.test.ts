// Generate over a real socket: expert, amateur and contrastive decoding, checked token by
// token against full forwards of the models and core/math's choice functions; stop strings
// held back and never sent; seeds reported and replayable.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FinishReason } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { GenerationMode } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import type { GenerateResponse } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { argmaxToken, contrastiveChoice } from "#core/math/sampling.ts";
import { plausibleSet } from "#core/math/selection.ts";
import type { InferenceServer } from "#inference/main.ts";
import type { CausalLmSession } from "#inference/model/session.ts";
import { clients, collect, fullForward, idsPrompt, openDirect, startServer, textPrompt, writeTinyPair } from "./helpers.ts";
import type { TinyPair } from "./helpers.ts";

let pair: TinyPair;
let server: InferenceServer;
let client: ReturnType<typeof clients>;
let expertDirect: CausalLmSession;
let amateurDirect: CausalLmSession;

beforeAll(async () => {
  pair = writeTinyPair();
  server = await startServer(pair);
  client = clients(server);
  expertDirect = await openDirect(pair.expertDir);
  amateurDirect = await openDirect(pair.amateurDir);
});

afterAll(async () => {
  client?.close();
  await server?.close(1000);
  await expertDirect?.release();
  await amateurDirect?.release();
  pair?.remove();
});

interface Generated {
  text: string;
  tokenIds: number[];
  chunks: Extract<GenerateResponse["event"], { case: "chunk" }>["value"][];
  finished: Extract<GenerateResponse["event"], { case: "finished" }>["value"];
}

async function generate(request: Parameters<typeof client.inference.generate>[0]): Promise<Generated> {
  const messages = await collect(client.inference.generate(request));
  const last = messages.at(-1)!;
  expect(last.event.case).toBe("finished");
  const chunks = messages.slice(0, -1).map((m) => {
    expect(m.event.case).toBe("chunk");
    const chunk = m.event.value as Generated["chunks"][number];
    // Every chunk covers at least one token.
    expect(chunk.tokenIds.length).toBeGreaterThan(0);
    return chunk;
  });
  return { text: chunks.map((c) => c.text).join(""), tokenIds: chunks.flatMap((c) => c.tokenIds), chunks, finished: last.event.value as Generated["finished"] };
}

const PROMPT = [2, 77, 350, 113, 116, 37, 124];

describe("decoding modes", () => {
  it("contrastive greedy picks, at every step, contrastiveChoice over the expert's plausible set", async () => {
    const out = await generate({ prompt: idsPrompt(PROMPT), sampling: { temperature: 0, maxNewTokens: 8 }, mode: GenerationMode.CONTRASTIVE, alpha: 0.2 });
    expect(out.tokenIds.length).toBe(out.finished.end!.usage!.completionTokens);
    const ids = [...PROMPT, ...out.tokenIds];
    const [expertRows, amateurRows] = await Promise.all([fullForward(expertDirect, ids), fullForward(amateurDirect, ids)]);
    let differsFromExpertGreedy = false;
    for (const [k, token] of out.tokenIds.entries()) {
      const row = PROMPT.length - 1 + k;
      expect(token).toBe(contrastiveChoice(expertRows[row], amateurRows[row], 0.2));
      expect(Array.from(plausibleSet(expertRows[row], 0.2))).toContain(token);
      if (token !== argmaxToken(expertRows[row])) differsFromExpertGreedy = true;
    }
    // The contrast matters: somewhere it overrules the expert's own favourite.
    expect(differsFromExpertGreedy).toBe(true);
  });

  it.each([
    ["expert", GenerationMode.EXPERT],
    ["amateur", GenerationMode.AMATEUR],
  ] as const)("%s greedy takes that model's argmax at every step", async (who, mode) => {
    const out = await generate({ prompt: idsPrompt(PROMPT), sampling: { temperature: 0, maxNewTokens: 8 }, mode });
    const ids = [...PROMPT, ...out.tokenIds];
    const rows = await fullForward(who === "expert" ? expertDirect : amateurDirect, ids);
    for (const [k, token] of out.tokenIds.entries()) expect(token).toBe(argmaxToken(rows[PROMPT.length - 1 + k]));
    expect(out.chunks.every((c) => c.adapterVersion === "")).toBe(true);
  });

  it("a sampled generation reports its seed and replays exactly from it", async () => {
    const request = { prompt: textPrompt("Once upon a time"), sampling: { temperature: 1.2, topP: 0.9, maxNewTokens: 24 }, mode: GenerationMode.CONTRASTIVE };
    const first = await generate(request);
    const again = await generate({ ...request, sampling: { ...request.sampling, seed: first.finished.seed } });
    expect(again.tokenIds).toEqual(first.tokenIds);
    expect(again.finished.seed).toBe(first.finished.seed);
    const other = await generate({ ...request, sampling: { ...request.sampling, seed: (first.finished.seed + 1) >>> 0 } });
    expect(other.tokenIds).not.toEqual(first.tokenIds);
  });
});

describe("stop strings", () => {
  it("end generation; the matched string and anything after it are never sent", async () => {
    const plain = await generate({ prompt: textPrompt("Count: 1, 2, 3,"), sampling: { temperature: 0, maxNewTokens: 40 }, mode: GenerationMode.EXPERT });
    // A stop string from the middle of what the model writes greedily, so it will be met.
    const text = plain.text;
    const start = Math.floor(text.length / 2);
    const stop = text.slice(start, start + 2);
    expect(stop.length).toBe(2);
    const stopped = await generate({ prompt: textPrompt("Count: 1, 2, 3,"), sampling: { temperature: 0, maxNewTokens: 40, stopStrings: ["never-appears", stop] }, mode: GenerationMode.EXPERT });
    expect(stopped.finished.end!.finishReason).toBe(FinishReason.STOP_STRING);
    expect(stopped.finished.end!.stopString).toBe(stop);
    expect(stopped.text).toBe(text.slice(0, text.indexOf(stop)));
    expect(stopped.text).not.toContain(stop);
    // Every generated token is reported exactly once, in order, including the one that completed the stop string.
    expect(stopped.tokenIds).toEqual(plain.tokenIds.slice(0, stopped.tokenIds.length));
    expect(stopped.tokenIds.length).toBe(stopped.finished.end!.usage!.completionTokens);
  });

  it("max_new_tokens ends generation with LENGTH and the usage counts", async () => {
    const out = await generate({ prompt: idsPrompt(PROMPT), sampling: { temperature: 0.5, seed: 3, maxNewTokens: 5 }, mode: GenerationMode.EXPERT });
    expect([FinishReason.LENGTH, FinishReason.EOS]).toContain(out.finished.end!.finishReason);
    expect(out.finished.end!.usage).toMatchObject({ promptTokens: PROMPT.length, completionTokens: out.tokenIds.length });
    expect(out.tokenIds.length).toBeLessThanOrEqual(5);
    const t = out.finished.end!.timings!;
    expect(t.totalMs).toBeGreaterThanOrEqual(t.timeToFirstStepMs);
    expect(t.timeToFirstStepMs).toBeGreaterThanOrEqual(t.queueWaitMs);
  });
});
