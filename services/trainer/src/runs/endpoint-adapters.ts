// A run's adapters on every inference replica it uses: each new version is uploaded to every
// address (each resolved address of a dns:/// endpoint too, since a channel would reach only
// one of them) without being activated, since the run's requests name it and other clients
// of the replica must not see it change under them; only a run configured to serve its
// result activates the final version. A replica that refuses is retried a few times; the
// versions must agree, since the server names a version by its content.
import { AdapterService } from "#core/gen/lightreasoner/v1/adapter_pb.ts";
import { createClient, GrpcError, Status } from "#core/grpc/adapter.ts";
import type { LoraAdapter } from "#core/model/lora.ts";
import { pushAdapter } from "#trainer/adapter-push.ts";
import type { EndpointPool } from "#trainer/sampling/endpoint-pool.ts";
import type { RestoreAdapter } from "#trainer/sampling/pinned-adapter.ts";

const ATTEMPTS = 3;
const BACKOFF_MS = 500;

/** Every replica address behind the pool's endpoints. */
export function replicaAddresses(pool: EndpointPool): string[] {
  return [...new Set(pool.endpoints.flatMap((e) => e.info.map((i) => i.address)))];
}

/** Uploads `adapter` to every replica, or to `addresses` (not activated); returns the version they all report. */
export async function pushToReplicas(
  pool: EndpointPool,
  adapter: LoraAdapter,
  baseModel: string,
  onRetry?: (message: string) => void,
  addresses = replicaAddresses(pool),
): Promise<{ version: string; endpoints: string[] }> {
  const versions = await Promise.all(addresses.map((address) => withRetries(`push the adapter to ${address}`, () => pushAdapter(address, adapter, { activate: false, baseModel, security: pool.security }), onRetry)));
  const distinct = [...new Set(versions)];
  if (distinct.length !== 1) throw new GrpcError(Status.INTERNAL, `the replicas named the same adapter differently: ${addresses.map((a, i) => `${a}=${versions[i]}`).join(", ")}`);
  return { version: distinct[0], endpoints: addresses };
}

/**
 * Makes `version` the adapter new requests that name none get, on every replica. A replica
 * that no longer holds it (NOT_FOUND: evicted, restarted) gets it from `restore` first.
 */
export async function activateOnReplicas(pool: EndpointPool, version: string, onRetry?: (message: string) => void, restore?: RestoreAdapter): Promise<void> {
  await Promise.all(
    replicaAddresses(pool).map((address) =>
      withRetries(`activate adapter ${version} on ${address}`, async () => {
        const client = createClient(AdapterService, address, { security: pool.security });
        const activate = () => client.activateAdapter({ version }, { timeoutMs: 10_000 });
        try {
          await activate().catch(async (err: unknown) => {
            if (!(restore && err instanceof GrpcError && err.code === Status.NOT_FOUND)) throw err;
            await restore(version, address);
            await activate();
          });
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
