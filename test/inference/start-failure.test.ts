// A start that fails after the models are open gives back everything it took: here the metrics
// port is taken, so the start fails after its gRPC port was bound; the same gRPC port must be
// free again for the next start.
import { createServer } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InferenceServer } from "#inference/main.ts";
import type { TinyPair } from "./helpers.ts";
import { startServer, writeTinyPair } from "./helpers.ts";

/** A loopback port nothing listens on right now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

describe("a start that fails after loading the models", () => {
  let pair: TinyPair;
  let running: InferenceServer;
  beforeAll(async () => {
    pair = writeTinyPair();
    running = await startServer(pair);
  });
  afterAll(async () => {
    await running?.close(0);
    pair?.remove();
  });

  it("rejects when its metrics port is taken, and leaves its gRPC port free for the next start", async () => {
    const port = await freePort();
    await expect(startServer(pair, { port, metricsPort: running.metricsPort })).rejects.toThrow(/EADDRINUSE|address already in use/i);
    const next = await startServer(pair, { port });
    expect(next.port).toBe(port);
    await next.close(0);
  });

  it("rejects when its gRPC port is taken", async () => {
    await expect(startServer(pair, { port: running.port })).rejects.toThrow(/No address added|EADDRINUSE|in use/i);
  });
});
