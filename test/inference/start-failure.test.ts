// A start that fails after the models are open gives back everything it took: here the metrics
// port is taken, so the start fails after its gRPC port was bound; the same gRPC port must be
// free again for the next start.
import { describe, expect, it } from "vitest";
import { freePort } from "#test/deploy/processes.ts";
import { servedTinyPair, startServer } from "./helpers.ts";

describe("a start that fails after loading the models", () => {
  const served = servedTinyPair(0);

  it("rejects when its metrics port is taken, and leaves its gRPC port free for the next start", async () => {
    const { pair, server: running } = served;
    const port = await freePort();
    await expect(startServer(pair, { port, metricsPort: running.metricsPort })).rejects.toThrow(/EADDRINUSE|address already in use/i);
    const next = await startServer(pair, { port });
    expect(next.port).toBe(port);
    await next.close(0);
  });

  it("rejects when its gRPC port is taken", async () => {
    await expect(startServer(served.pair, { port: served.server.port })).rejects.toThrow(/No address added|EADDRINUSE|in use/i);
  });
});
