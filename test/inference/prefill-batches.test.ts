// The prefill budget (--prefill-batch-tokens): a server that prefills fewer prompt tokens per
// batch runs more, shorter model steps, each of which holds its event loop, and writes the
// same trajectories as one with the default budget. A prompt longer than the budget is read
// in chunks of the budget, one a step, so no prefill step runs more tokens than that.
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
  it("prefills prompts longer than the budget one to a batch, and writes what the default budget writes", async () => {
    const before = await scrape(narrow);
    const fromNarrow = await completions(narrow);
    const after = await scrape(narrow);
    const fromWide = await completions(wide);
    expect(fromNarrow.size).toBe(8);
    for (const [id, tokens] of fromWide) expect(fromNarrow.get(id), id).toEqual(tokens);
    // Each of the eight prompts (5+ tokens against a budget of 4) began as one expert batch of one sequence, its first chunk.
    const single = (s: typeof before) => metric(s, "lightreasoner_inference_batch_size_bucket", { model: "expert", le: "1" });
    expect(single(after) - single(before)).toBeGreaterThanOrEqual(8);
  });

  it("reads a prompt longer than the budget in chunks of the budget, one a step, and writes what one prefill writes", async () => {
    const prompt = idsPrompt(Array.from({ length: 22 }, (_, j) => (11 * j + 5) % 300));
    const run = async (server: InferenceServer) => {
      const expertBatches = async () => metric(await scrape(server), "lightreasoner_inference_batch_size_count", { model: "expert" });
      const before = await expertBatches();
      const client = clients(server);
      try {
        const call = client.inference.streamTrajectories();
        await call.write({ requestId: "long", action: { case: "start", value: { prompt, sampling: { temperature: 0.9, seed: 7, maxNewTokens: 5 }, distributions: sparse() } } });
        call.end();
        const trajectory = byRequest(await collect(call)).get("long")!;
        const kls = trajectory.steps.map((s) => (s.scored.distributions.case === "sparse" ? s.scored.distributions.value.klDivergence : Number.NaN));
        return { tokens: trajectory.steps.map((s) => s.scored.tokenId), kls, batches: (await expertBatches()) - before };
      } finally {
        client.close();
      }
    };
    const chunked = await run(narrow);
    const whole = await run(wide);
    expect(chunked.tokens.length).toBeGreaterThan(0);
    expect(chunked.tokens).toEqual(whole.tokens);
    // One batch per chunk (22 tokens in chunks of 4: six), then one per further token.
    expect(whole.batches).toBe(1 + whole.tokens.length - 1);
    expect(chunked.batches).toBe(6 + chunked.tokens.length - 1);
    // The same distributions to float32 rounding (a chunk's attention sums its past in another order).
    chunked.kls.forEach((kl, i) => expect(kl).toBeCloseTo(whole.kls[i], 4));
  });

  it("refuses a budget that is not a positive integer, before loading the models", async () => {
    for (const prefillBatchTokens of [0, -3, 2.5]) {
      const started = startServer(pair, { prefillBatchTokens });
      await expect(started).rejects.toBeInstanceOf(InvalidServerConfigError);
      await expect(started).rejects.toThrow(`prefillBatchTokens: must be a positive integer, got ${prefillBatchTokens}`);
    }
  });
});
