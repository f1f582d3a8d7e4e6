// The adapter a trainer request pins: every trajectory and evaluation request of a run names
// the expert it wants (AdapterSelection in common.proto) instead of taking whatever adapter a
// replica has active, so runs sharing replicas cannot change each other's samples. A pinned
// version is written as the responses spell it: "" is the base expert.
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AdapterSelectionSchema } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { AdapterIgnoredError } from "./errors.ts";

/** The request field that pins `version` ("" selects the base expert). */
export function adapterSelection(version: string): MessageInitShape<typeof AdapterSelectionSchema> {
  return version === "" ? { choice: { case: "base", value: {} } } : { choice: { case: "version", value: version } };
}

/** Throws when a replica answered with another adapter than the request pinned. */
export function checkPinned(pinned: string, served: string, endpoint: string, what: string): void {
  if (served !== pinned) throw new AdapterIgnoredError(endpoint, what, pinned, served);
}
