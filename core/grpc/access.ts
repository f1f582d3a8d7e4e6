// Who may call what, checked before a handler runs. Whether a method changes anything is read
// from the contract: the read methods carry `option idempotency_level = NO_SIDE_EFFECTS` in the
// .proto files, so the list of mutating RPCs lives there and nowhere else. A caller proves
// itself with a bearer token (`authorization: Bearer <token>` metadata), compared through its
// SHA-256 digest in constant time so neither its content nor its length leaks through timing,
// or with a client certificate the TLS handshake verified (mTLS). No message or log line ever
// carries a token: refusals say what was wrong, never what was sent.
import { createHash, timingSafeEqual } from "node:crypto";
import type { DescMethod } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { GrpcError, Status } from "./errors.ts";

/** What a server accepts as a credential, and which calls need one. */
export interface AccessOptions {
  /** The bearer token callers present; null or absent: none. */
  token?: string | null;
  /** The server verifies client certificates (mTLS); a verified one counts as the credential. */
  clientCertificates?: boolean;
  /** Require the credential for read methods too (default: reads are open). */
  protectReads?: boolean;
  /** With no credential configured, let anyone call mutating methods (default: refuse them). */
  allowUnauthenticated?: boolean;
}

export interface AccessPolicy {
  /** SHA-256 of the accepted token; null when tokens are not accepted. */
  readonly tokenDigest: Buffer | null;
  readonly clientCertificates: boolean;
  readonly protectReads: boolean;
  readonly allowUnauthenticated: boolean;
}

/** The metadata key of the credential (lowercase, as HTTP/2 sends it). */
export const AUTHORIZATION_METADATA_KEY = "authorization";
/** Short tokens can be guessed; 16 characters of a random generator are far beyond that. */
export const MIN_TOKEN_LENGTH = 16;
const MAX_TOKEN_LENGTH = 4096;
/** Visible ASCII: what an HTTP/2 header value can carry unchanged. */
const TOKEN_CHARACTERS = /^[\x21-\x7e]+$/;

const digest = (token: string) => createHash("sha256").update(token, "utf8").digest();

/**
 * Checks a token's shape; `source` names where it came from (a flag, a file, a variable) for
 * the message, which never quotes the token itself.
 */
export function checkToken(token: string, source: string): string {
  if (token.length < MIN_TOKEN_LENGTH) throw new Error(`${source}: the token has ${token.length} characters; at least ${MIN_TOKEN_LENGTH} are required`);
  if (token.length > MAX_TOKEN_LENGTH) throw new Error(`${source}: the token is longer than ${MAX_TOKEN_LENGTH} characters`);
  if (!TOKEN_CHARACTERS.test(token)) throw new Error(`${source}: the token may hold only visible ASCII characters (no spaces or control characters)`);
  return token;
}

export function accessPolicy(options: AccessOptions = {}): AccessPolicy {
  const token = options.token ?? null;
  if (token !== null) checkToken(token, "token");
  const clientCertificates = options.clientCertificates ?? false;
  const allowUnauthenticated = options.allowUnauthenticated ?? false;
  if (allowUnauthenticated && (token !== null || clientCertificates)) {
    throw new Error("allowUnauthenticated contradicts a configured credential (a token or client certificates): choose one");
  }
  return { tokenDigest: token === null ? null : digest(token), clientCertificates, protectReads: options.protectReads ?? false, allowUnauthenticated };
}

/** True for the methods the contract marks as having no side effects. */
export const isReadMethod = (method: DescMethod) => method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS;

/** Which calls of a server need the credential; for the startup log. */
export function describePolicy(policy: AccessPolicy): string {
  const calls = policy.protectReads ? "every call" : "mutating calls";
  const accepted = [policy.tokenDigest ? "a bearer token" : "", policy.clientCertificates ? "a verified client certificate" : ""].filter(Boolean);
  if (accepted.length > 0) return `${calls} need ${accepted.join(" or ")}`;
  return policy.allowUnauthenticated ? `no credential configured: ${calls} are open to anyone (--allow-unauthenticated)` : `no credential configured: ${calls} are refused`;
}

/** Logs the policy at startup: a warning when no credential is configured (refused or open). */
export function logPolicy(logger: { info(message: string): void; warn(message: string): void }, policy: AccessPolicy): void {
  const configured = policy.tokenDigest !== null || policy.clientCertificates;
  if (configured) logger.info(`access: ${describePolicy(policy)}`);
  else logger.warn(`access: ${describePolicy(policy)}${policy.allowUnauthenticated ? "" : " (give --auth-token-file, LIGHTREASONER_AUTH_TOKEN or --tls-client-ca)"}`);
}

/** What the access check reads from a call. */
export interface CallCredentials {
  metadata: grpc.Metadata;
  /** The TLS peer certificate, present only when the handshake verified it. */
  peerCertificate?: object;
}

/** Null when the call may go ahead; otherwise the status that refuses it. */
export function checkAccess(policy: AccessPolicy, method: DescMethod, call: CallCredentials): GrpcError | null {
  if (isReadMethod(method) && !policy.protectReads) return null;
  const what = method.name;
  if (policy.tokenDigest === null && !policy.clientCertificates) {
    if (policy.allowUnauthenticated) return null;
    return new GrpcError(
      Status.UNAUTHENTICATED,
      `${what} needs a credential, but this server was started without one: give it --auth-token-file, LIGHTREASONER_AUTH_TOKEN or --tls-client-ca (or --allow-unauthenticated to open it)`,
    );
  }
  if (policy.clientCertificates && call.peerCertificate !== undefined) return null;
  const wanted = policy.tokenDigest ? "`authorization: Bearer <token>` metadata" : "a client certificate";
  const refusal = bearerRefusal(policy, call.metadata.get(AUTHORIZATION_METADATA_KEY), wanted);
  return refusal && new GrpcError(refusal.code, `${what}${refusal.problem}`);
}

/**
 * Why the authorization values do not carry the accepted bearer token (null when they do);
 * `problem` continues a sentence that starts with what was called.
 */
function bearerRefusal(policy: AccessPolicy, values: readonly unknown[], wanted: string): { code: Status; problem: string } | null {
  if (values.length === 0) return { code: Status.UNAUTHENTICATED, problem: ` needs a credential: send ${wanted}` };
  if (values.length > 1) return { code: Status.UNAUTHENTICATED, problem: `: send one authorization value, not ${values.length}` };
  const value = values[0];
  const bearer = typeof value === "string" ? /^bearer +(\S+)\s*$/i.exec(value) : null;
  if (!bearer) return { code: Status.UNAUTHENTICATED, problem: `: the authorization must read "Bearer <token>"` };
  if (policy.tokenDigest === null) return { code: Status.PERMISSION_DENIED, problem: ": this server accepts client certificates only, not bearer tokens" };
  if (!timingSafeEqual(digest(bearer[1]), policy.tokenDigest)) return { code: Status.PERMISSION_DENIED, problem: ": the bearer token is not the one this server accepts" };
  return null;
}

/**
 * The HTTP refusal of a Prometheus scrape (null: serve it). Metrics are a read, open unless
 * reads are protected; then the scrape must carry the bearer token (Prometheus'
 * `authorization.credentials_file`). The metrics port is plain HTTP, so a server that accepts
 * client certificates only has no credential a scrape could show, and refuses them all.
 */
export function scrapeRefusal(policy: AccessPolicy, authorization: string | undefined): { status: 401 | 403; message: string } | null {
  if (!policy.protectReads) return null;
  if (policy.tokenDigest === null && !policy.clientCertificates && policy.allowUnauthenticated) return null;
  const refusal =
    policy.tokenDigest === null
      ? { code: Status.PERMISSION_DENIED, problem: " is closed: reads are protected and this server accepts no bearer token (give --auth-token-file)" }
      : bearerRefusal(policy, authorization === undefined ? [] : [authorization], "an `Authorization: Bearer <token>` header");
  return refusal && { status: refusal.code === Status.UNAUTHENTICATED ? 401 : 403, message: `GET /metrics${refusal.problem}` };
}
