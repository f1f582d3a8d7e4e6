// The inference endpoints a run uses, checked before any work is sent and tracked while it
// runs. At connect, GetModelInfo on every endpoint (on every resolved address of a dns:///
// target) must show the trainer's expert (by model fingerprint) and the same expert/amateur
// pair everywhere. Work is spread over "lanes": one per "host:port" endpoint, one per
// resolved address of a dns:/// endpoint, each lane with a channel of its own to its one
// address (a shared round-robin channel would put a run's few long-lived calls on whichever
// replica connected first). The caller picks the up lane with the least outstanding work; a
// lane that fails is marked down for a while and its work goes elsewhere. Addresses are
// resolved when the pool connects: replicas added later join the next run.
import { lookup } from "node:dns/promises";
import type { ChannelOptions } from "@grpc/grpc-js";
import { createClient, GrpcError, Status } from "#core/grpc/adapter.ts";
import type { ClientOptions, ClientSecurity, ServiceClient } from "#core/grpc/adapter.ts";
import { InferenceService } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import type { GetModelInfoResponse } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { modelFingerprint } from "#core/formats/model-dir.ts";
import { EndpointMismatchError, EndpointUnreachableError, FingerprintMismatchError } from "./errors.ts";
import { hostPort, parseEndpointTargets } from "./targets.ts";
import type { EndpointTarget } from "./targets.ts";

export type InferenceMethods = (typeof InferenceService)["method"];
export type InferenceClient = ServiceClient<InferenceMethods>;

export interface EndpointPoolOptions {
  /** "host:port" or "dns:///name:port" addresses. */
  targets: readonly string[];
  /** The trainer's expert directory: its fingerprint must equal every endpoint's expert. */
  expertDir?: string;
  /** The trainer's expert fingerprint, when already computed (wins over expertDir). */
  expertFingerprint?: string;
  /** How long to keep trying an endpoint at connect before calling it unreachable (default 10 s). */
  connectTimeoutMs?: number;
  /** How long a failed lane sits out before it is tried again (default 2 s). */
  downForMs?: number;
  /** Refuse endpoints whose active adapters differ (default false: each trajectory records its adapter). */
  requireSameAdapter?: boolean;
  /** Extra grpc-js channel options. */
  channelOptions?: ChannelOptions;
  /** TLS and the bearer token for every endpoint (default: plain text, no token). */
  security?: ClientSecurity;
}

/** What every endpoint serves (checked equal at connect) and the tightest of their limits. */
export interface ServedPair {
  expertName: string;
  expertFingerprint: string;
  amateurName: string;
  amateurFingerprint: string;
  tokenizerFingerprint: string;
  vocabSize: number;
  maxTrajectoriesPerStream: number;
  maxTopK: number;
  maxNewTokens: number;
  maxPromptTokens: number;
}

export interface Endpoint {
  target: EndpointTarget;
  /** As the user wrote it. */
  name: string;
  /** One GetModelInfo answer per address checked (one for "host:port"). */
  info: { address: string; info: GetModelInfoResponse }[];
}

export interface Lane {
  /** The endpoint's name, with "#i" for the i-th lane of a dns:/// endpoint. */
  readonly id: string;
  readonly endpoint: Endpoint;
  /** "host:port" of the one replica this lane talks to. */
  readonly address: string;
  /** A channel to that address only. */
  readonly client: InferenceClient;
  /** Work in flight on this lane, kept by the caller through begin/end. */
  outstanding: number;
  /** Epoch milliseconds until which the lane is down (0: up). */
  downUntil: number;
  lastError: string | null;
}

export interface LaneDownEvent {
  lane: Lane;
  reason: string;
  until: number;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_DOWN_FOR_MS = 2_000;
const RETRY_CONNECT_MS = 200;
/** Pings find a dead peer on an idle long-lived call; grpc-js servers accept this rate. */
const KEEPALIVE: ChannelOptions = { "grpc.keepalive_time_ms": 30_000, "grpc.keepalive_timeout_ms": 10_000 };
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

export class EndpointPool {
  readonly lanes: Lane[];
  private readonly downListeners = new Set<(event: LaneDownEvent) => void>();

  private constructor(
    readonly endpoints: Endpoint[],
    readonly served: ServedPair,
    readonly downForMs: number,
    channelOptions: ChannelOptions,
    /** How every channel to the replicas is secured; adapter pushes use it too. */
    readonly security: ClientSecurity | undefined,
  ) {
    this.lanes = endpoints.flatMap((endpoint) =>
      endpoint.info.map(({ address }, i) => ({
        id: endpoint.info.length > 1 ? `${endpoint.name}#${i}` : endpoint.name,
        endpoint,
        address,
        client: createClient(InferenceService, address, { channelOptions, security }),
        outstanding: 0,
        downUntil: 0,
        lastError: null,
      })),
    );
  }

  /** Reaches and checks every endpoint; throws a typed error naming the first that fails. */
  static async connect(options: EndpointPoolOptions): Promise<EndpointPool> {
    const targets = parseEndpointTargets(options.targets);
    const timeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const channelOptions = { "grpc.max_receive_message_length": MAX_MESSAGE_BYTES, ...KEEPALIVE, ...options.channelOptions };
    const endpoints: Endpoint[] = [];
    for (const target of targets) endpoints.push({ target, name: target.text, info: await describeEndpoint(target, timeoutMs, { channelOptions, security: options.security }) });
    const expected = options.expertFingerprint ?? (options.expertDir ? modelFingerprint(options.expertDir) : null);
    const served = checkEndpoints(endpoints, expected, options.expertDir ?? null, options.requireSameAdapter ?? false);
    return new EndpointPool(endpoints, served, options.downForMs ?? DEFAULT_DOWN_FOR_MS, channelOptions, options.security);
  }

  isUp(lane: Lane, now = Date.now()): boolean {
    return lane.downUntil <= now;
  }

  /** The up lane with the least outstanding work below `limit` (ties: list order); null when none. */
  pick(limit: number, now = Date.now()): Lane | null {
    let best: Lane | null = null;
    for (const lane of this.lanes) {
      if (!this.isUp(lane, now) || lane.outstanding >= limit) continue;
      if (best === null || lane.outstanding < best.outstanding) best = lane;
    }
    return best;
  }

  begin(lane: Lane): void {
    lane.outstanding++;
  }

  end(lane: Lane): void {
    lane.outstanding = Math.max(0, lane.outstanding - 1);
  }

  /** Takes a lane out of rotation for downForMs; its work should be retried elsewhere. */
  markDown(lane: Lane, reason: string, now = Date.now()): void {
    lane.downUntil = now + this.downForMs;
    lane.lastError = reason;
    for (const listener of this.downListeners) listener({ lane, reason, until: lane.downUntil });
  }

  /** Milliseconds until the next down lane is back; null when every lane is up. */
  nextRecoveryMs(now = Date.now()): number | null {
    let soonest: number | null = null;
    for (const lane of this.lanes) if (lane.downUntil > now) soonest = Math.min(soonest ?? Infinity, lane.downUntil - now);
    return soonest;
  }

  allDown(now = Date.now()): boolean {
    return this.lanes.every((lane) => !this.isUp(lane, now));
  }

  onLaneDown(listener: (event: LaneDownEvent) => void): () => void {
    this.downListeners.add(listener);
    return () => this.downListeners.delete(listener);
  }

  close(): void {
    for (const lane of this.lanes) lane.client.close();
    this.downListeners.clear();
  }
}

/** GetModelInfo from every address behind a target, each on a direct channel of its own. */
async function describeEndpoint(target: EndpointTarget, timeoutMs: number, connection: ClientOptions): Promise<Endpoint["info"]> {
  let addresses: string[];
  if (target.kind === "direct") addresses = [hostPort(target.host, target.port)];
  else {
    try {
      const resolved = await lookup(target.host, { all: true });
      addresses = [...new Set(resolved.map((a) => hostPort(a.address, target.port)))];
    } catch (err) {
      throw new EndpointUnreachableError(target.text, `the name ${target.host} does not resolve (${(err as Error).message})`);
    }
    if (addresses.length === 0) throw new EndpointUnreachableError(target.text, `the name ${target.host} resolves to no address`);
  }
  const out: Endpoint["info"] = [];
  for (const address of addresses) {
    const name = target.kind === "dns" ? `${target.text} (${address})` : target.text;
    out.push({ address, info: await modelInfo(address, name, timeoutMs, connection) });
  }
  return out;
}

/** Asks one address until it answers or the time is up (a server may still be starting). */
async function modelInfo(address: string, name: string, timeoutMs: number, connection: ClientOptions): Promise<GetModelInfoResponse> {
  const client = createClient(InferenceService, address, connection);
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      const left = deadline - Date.now();
      try {
        return await client.getModelInfo({}, { timeoutMs: Math.max(1, left) });
      } catch (err) {
        const status = err instanceof GrpcError ? err : new GrpcError(Status.UNKNOWN, String(err));
        const transient = status.code === Status.UNAVAILABLE || status.code === Status.DEADLINE_EXCEEDED;
        if (!transient) throw new EndpointUnreachableError(name, `GetModelInfo failed with ${status.codeName}: ${status.message} (is this a lightreasoner inference server?)`);
        if (Date.now() + RETRY_CONNECT_MS >= deadline) throw new EndpointUnreachableError(name, `no answer within ${timeoutMs} ms (${status.codeName}: ${status.message})`);
        await new Promise((resolve) => setTimeout(resolve, RETRY_CONNECT_MS));
      }
    }
  } finally {
    client.close();
  }
}

function checkEndpoints(endpoints: Endpoint[], expected: string | null, expertDir: string | null, requireSameAdapter: boolean): ServedPair {
  const all = endpoints.flatMap((e) => e.info.map(({ address, info }) => ({ name: e.target.kind === "dns" ? `${e.name} (${address})` : e.name, info })));
  const first = all[0];
  for (const { name, info } of all) {
    const fingerprint = info.expert?.fingerprint ?? "";
    if (expected !== null && fingerprint !== expected) throw new FingerprintMismatchError(name, expected, fingerprint, expertDir);
    const differences = pairDifferences(first.info, info, requireSameAdapter);
    if (differences.length > 0) throw new EndpointMismatchError(name, first.name, differences);
  }
  const limits = all.map(({ info }) => info.limits);
  const least = (pick: (l: NonNullable<GetModelInfoResponse["limits"]>) => number) => Math.min(...limits.map((l) => (l ? pick(l) : 0)));
  return {
    expertName: first.info.expert?.name ?? "",
    expertFingerprint: first.info.expert?.fingerprint ?? "",
    amateurName: first.info.amateur?.name ?? "",
    amateurFingerprint: first.info.amateur?.fingerprint ?? "",
    tokenizerFingerprint: first.info.tokenizer?.fingerprint ?? "",
    vocabSize: first.info.vocabSize,
    maxTrajectoriesPerStream: least((l) => l.maxTrajectoriesPerStream),
    maxTopK: least((l) => l.maxTopK),
    maxNewTokens: least((l) => l.maxNewTokens),
    maxPromptTokens: least((l) => l.maxPromptTokens),
  };
}

function pairDifferences(a: GetModelInfoResponse, b: GetModelInfoResponse, requireSameAdapter: boolean): string[] {
  const out: string[] = [];
  const compare = (what: string, x: unknown, y: unknown) => {
    if (x !== y) out.push(`${what} ${String(y)} (vs ${String(x)})`);
  };
  compare("expert fingerprint", a.expert?.fingerprint, b.expert?.fingerprint);
  compare("amateur fingerprint", a.amateur?.fingerprint, b.amateur?.fingerprint);
  compare("tokenizer fingerprint", a.tokenizer?.fingerprint, b.tokenizer?.fingerprint);
  compare("vocab_size", a.vocabSize, b.vocabSize);
  if (requireSameAdapter) compare("active adapter", a.adapterVersion || "(base)", b.adapterVersion || "(base)");
  return out;
}
