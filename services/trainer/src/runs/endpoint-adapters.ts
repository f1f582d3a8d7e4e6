// A run's adapters on every inference replica it uses: each new version goes to every
// address (each resolved address of a dns:/// endpoint too, since a channel would reach only
// one of them), and a fresh run first puts every replica back on the base expert. A replica
// that refuses is retried a few times; the versions must agree, since the server names a
// version by its content.
import { AdapterService } from "#core/gen/lightreasoner/v1/adapter_pb.ts";
import { createClient, GrpcError, Status } from "#core/grpc/adapter.ts";
import type { LoraAdapter } from "#core/model/lora.ts";
import { pushAdapter } from "#trainer/adapter-push.ts";
import type { EndpointPool } from "#trainer/sampling/endpoint-pool.ts";

const ATTEMPTS = 3;
const BACKOFF_MS = 500;

/** Every replica address behind the pool's endpoints. */
export function replicaAddresses(pool: EndpointPool): string[] {
  return [...new Set(pool.endpoints.flatMap((e) => e.info.map((i) => i.address)))];
}

/** Uploads and activates `adapter` on every replica; returns the version they all report. */
export async function pushToReplicas(pool: EndpointPool, adapter: LoraAdapter, baseModel: string, onRetry?: (message: string) => void): Promise<{ version: string; endpoints: string[] }> {
  const addresses = replicaAddresses(pool);
  const versions = await Promise.all(addresses.map((address) => withRetries(`push the adapter to ${address}`, () => pushAdapter(address, adapter, { baseModel, security: pool.security }), onRetry)));
  const distinct = [...new Set(versions)];
  if (distinct.length !== 1) throw new GrpcError(Status.INTERNAL, `the replicas named the same adapter differently: ${addresses.map((a, i) => `${a}=${versions[i]}`).join(", ")}`);
  return { version: distinct[0], endpoints: addresses };
}

/** Makes every replica serve the base expert to new requests. */
export async function rollbackReplicas(pool: EndpointPool, onRetry?: (message: string) => void): Promise<void> {
  await Promise.all(
    replicaAddresses(pool).map((address) =>
      withRetries(`roll ${address} back to the base expert`, async () => {
        const client = createClient(AdapterService, address, { security: pool.security });
        try {
          await client.rollbackToBase({}, { timeoutMs: 10_000 });
        } finally {
          client.close();
        }
      }, onRetry),
    ),
  );
}

async function withRetries<T>(what: string, action: () => Promise<T>, onRetry?: (message: string) => void): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await action();
    } catch (err) {
      const status = err instanceof GrpcError ? err : new GrpcError(Status.UNKNOWN, (err as Error).message);
      if (attempt >= ATTEMPTS) throw new GrpcError(Status.UNAVAILABLE, `could not ${what} after ${ATTEMPTS} attempts: ${status.codeName}: ${status.message}`);
      onRetry?.(`${what} failed (${status.codeName}: ${status.message}); attempt ${attempt + 1} of ${ATTEMPTS}`);
      await new Promise((resolve) => setTimeout(resolve, BACKOFF_MS * attempt));
    }
  }
}
