// Serves a prom-client registry as Prometheus text at GET /metrics on a port of its own,
// the way both services expose their metrics (scrapes never compete with gRPC traffic). A
// guard may ask scrapes for a credential (the services do when reads are protected).
import { createServer } from "node:http";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";

export interface MetricsEndpoint {
  port: number;
  close(): Promise<void>;
}

/** Decides whether a scrape may read the metrics, from its Authorization header; null: yes. */
export type ScrapeGuard = (authorization: string | undefined) => { status: 401 | 403; message: string } | null;

/** Serves `registry` at http://host:port/metrics (port 0: one the OS picks). */
export async function serveMetrics(registry: Registry, host: string, port: number, guard: ScrapeGuard = () => null): Promise<MetricsEndpoint> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" || path !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found: metrics are at GET /metrics\n");
      return;
    }
    const refusal = guard(req.headers.authorization);
    if (refusal) {
      const challenge = refusal.status === 401 ? { "www-authenticate": 'Bearer realm="metrics"' } : {};
      res.writeHead(refusal.status, { "content-type": "text/plain", ...challenge }).end(`${refusal.message}\n`);
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { "content-type": registry.contentType }).end(text),
      (err: Error) => res.writeHead(500, { "content-type": "text/plain" }).end(`metrics failed: ${err.message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
