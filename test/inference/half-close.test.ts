// A client that half-closes right after its last requests must still get every message: the
// finished messages of trajectories that end together in one scheduler tick, and those of
// requests refused at once. The handler now ends the call only after every message was handed
// to the transport; before, a benchmark with 0.5B-shaped models saw a call end with messages
// still queued (the client then waited forever). This test did not reproduce that race on the
// tiny pair here; it checks the behaviour the fix guarantees.
import { describe, expect, it } from "vitest";
import type { StreamTrajectoriesResponse } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { byRequest, clients, FULL32, idsPrompt, servedTinyPair, sleep } from "./helpers.ts";

/** Every message of the call, or a failure after `ms` instead of a hang. */
async function collectWithin(stream: AsyncIterable<StreamTrajectoriesResponse>, ms: number): Promise<StreamTrajectoriesResponse[]> {
  const out: StreamTrajectoriesResponse[] = [];
  const all = (async () => {
    for await (const m of stream) out.push(m);
    return out;
  })();
  const late = sleep(ms).then(() => {
    throw new Error(`the call did not end within ${ms} ms; got ${out.length} messages: ${out.map((m) => `${m.requestId}:${m.event.case}`).join(" ")}`);
  });
  return Promise.race([all, late]);
}

describe("StreamTrajectories after the client half-closes", () => {
  const served = servedTinyPair(1000);

  it("delivers the finished messages of many trajectories that end in the same tick, and of refused ones", async () => {
    for (let attempt = 0; attempt < 5; attempt++) {
      const c = clients(served.server);
      const call = c.inference.streamTrajectories();
      await call.write({ requestId: "long", action: { case: "start", value: { prompt: idsPrompt([5, 6, 7]), sampling: { maxNewTokens: 24, seed: 1 }, distributions: FULL32 } } });
      await sleep(10);
      // More messages in one tick than the call buffers (16), so some wait for the transport.
      const short = Array.from({ length: 24 }, (_, i) => `s${i}`);
      for (const id of short) {
        await call.write({ requestId: id, action: { case: "start", value: { prompt: idsPrompt([8, 9]), sampling: { maxNewTokens: 2, seed: 2 }, distributions: FULL32 } } });
      }
      await call.write({ requestId: "refused", action: { case: "start", value: { prompt: idsPrompt([8, 9]), sampling: { maxNewTokens: 2, topP: 7 } } } });
      call.end();
      const trajectories = byRequest(await collectWithin(call, 10_000));
      for (const id of ["long", ...short, "refused"]) expect(trajectories.get(id)?.finished, `${id} (attempt ${attempt})`).toBeDefined();
      expect(trajectories.get("s0")!.steps).toHaveLength(2);
      expect(trajectories.get("refused")!.finished!.error?.field).toBe("sampling.top_p");
      c.close();
    }
  });
});
