// The adapter a trainer request pins: every trajectory and evaluation request of a run names
// the expert it wants (AdapterSelection in common.proto) instead of taking whatever adapter a
// replica has active, so runs sharing replicas cannot change each other's samples. A pinned
// version is written as the responses spell it: "" is the base expert. A replica can lose a
// pinned adapter while the run still names it (evicted for other clients' adapters, or
// restarted at the same address; a replica added behind a dns:/// endpoint joins the next
// run, which uploads first); the run then uploads it again.
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AdapterSelectionSchema } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { GrpcError, Status } from "#core/grpc/errors.ts";
import { AdapterIgnoredError } from "./errors.ts";

/** The request field a replica names when it does not hold the version a request pinned. */
const PINNED_VERSION_FIELD = "adapter.version";

/** The request field that pins `version` ("" selects the base expert). */
export function adapterSelection(version: string): MessageInitShape<typeof AdapterSelectionSchema> {
  return version === "" ? { choice: { case: "base", value: {} } } : { choice: { case: "version", value: version } };
}

/** Throws when a replica answered with another adapter than the request pinned. */
export function checkPinned(pinned: string, served: string, endpoint: string, what: string): void {
  if (served !== pinned) throw new AdapterIgnoredError(endpoint, what, pinned, served);
}

/** Whether a refusal says the replica does not hold the adapter the request pinned (NOT_FOUND on adapter.version). */
export function lostPinnedAdapter(refusal: { code: Status; field: string }, pinned: string | undefined): pinned is string {
  return pinned !== undefined && pinned !== "" && refusal.code === Status.NOT_FOUND && refusal.field === PINNED_VERSION_FIELD;
}

/** The sampling or evaluation fails with this when a lost adapter could not be uploaded again. */
export function restoreFailed(lane: string, version: string, refusal: string, err: unknown): GrpcError {
  return new GrpcError(Status.UNAVAILABLE, `${lane} no longer holds adapter ${version} (${refusal}), and uploading it again failed: ${(err as Error).message}`);
}

/** Uploads a run's adapter `version` again to the replica at `address`; resolves once it holds it. */
export type RestoreAdapter = (version: string, address: string) => Promise<void>;

/**
 * One upload at a time per version and replica: every request that finds the adapter gone
 * while an upload of it is under way waits for that one (a batch of trajectories fails
 * together when a replica restarts, and each would otherwise upload the same weights again).
 */
export function restoreOncePerReplica(upload: RestoreAdapter): RestoreAdapter {
  const underway = new Map<string, Promise<void>>();
  return (version, address) => {
    const key = `${address} ${version}`;
    let pending = underway.get(key);
    if (!pending) {
      pending = upload(version, address).finally(() => underway.delete(key));
      underway.set(key, pending);
    }
    return pending;
  };
}
