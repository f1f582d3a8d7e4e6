// The prefill budget (--prefill-batch-tokens): a server that prefills fewer prompt tokens per
// batch runs more, shorter model steps, each of which holds its event loop, and writes the
// same trajectories as one with the default budget.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InferenceServer } from "#inference/main.ts";
import { InvalidServerConfigError } from "#inference/server/limits.ts";
import { byRequest, clients, collect, idsPrompt, metric, scrape, sparse, startServer, writeTinyPair } from "./helpers.ts";
import type { TinyPair } from "./helpers.ts";

let pair: TinyPair;
let wide: InferenceServer;
let narrow: InferenceServer;

beforeAll(async () => {
  pair = writeTinyPair();
  wide = await startServer(pair, { limits: { maxBatchSize: 8 } });
  narrow = await startServer(pair, { limits: { maxBatchSize: 8 }, prefillBatchTokens: 4 });
});

afterAll(async () => {
  await Promise.all([wide?.close(1000), narrow?.close(1000)]);
  pair?.remove();
});

/** Eight seeded trajectories of prompts 5 to 12 tokens long, in one call; their completions by request id. */
async function completions(server: InferenceServer): Promise<Map<string, number[]>> {
  const client = clients(server);
  try {
    const call = client.inference.streamTrajectories();
    for (let i = 0; i < 8; i++) {
      const prompt = idsPrompt(Array.from({ length: 5 + i }, (_, j) => (7 * i + 3 * j + 1) % 300));
      await call.write({ requestId: `t${i}`, action: { case: "start", value: { prompt, sampling: { temperature: 0.9, seed: 50 + i, maxNewTokens: 6 }, distributions: sparse() } } });
    }
    call.end();
    const byId = byRequest(await collect(call));
    return new Map([...byId].map(([id, t]) => [id, t.steps.map((s) => s.scored.tokenId)]));
  } finally {
    client.close();
  }
}

describe("prefill batches under a token budget", () => {
  it("prefills every prompt longer than the budget alone, and writes what the default budget writes", async () => {
    const before = await scrape(narrow);
    const fromNarrow = await completions(narrow);
    const after = await scrape(narrow);
    const fromWide = await completions(wide);
    expect(fromNarrow.size).toBe(8);
    for (const [id, tokens] of fromWide) expect(fromNarrow.get(id), id).toEqual(tokens);
    // Each of the eight prompts (5+ tokens against a budget of 4) was one expert batch of one sequence.
    const single = (s: typeof before) => metric(s, "lightreasoner_inference_batch_size_bucket", { model: "expert", le: "1" });
    expect(single(after) - single(before)).toBeGreaterThanOrEqual(8);
  });

  it("refuses a budget that is not a positive integer, before loading the models", async () => {
    for (const prefillBatchTokens of [0, -3, 2.5]) {
      const started = startServer(pair, { prefillBatchTokens });
      await expect(started).rejects.toBeInstanceOf(InvalidServerConfigError);
      await expect(started).rejects.toThrow(`prefillBatchTokens: must be a positive integer, got ${prefillBatchTokens}`);
    }
  });
});
