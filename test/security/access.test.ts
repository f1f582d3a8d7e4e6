// The access check on its own (core/grpc/access.ts): which methods the contract marks as reads,
// and the status every credential case gets, with hand-built metadata. The same check runs
// inside real servers in token.test.ts and tls.test.ts.
import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { accessPolicy, checkAccess, checkToken, isReadMethod } from "#core/grpc/access.ts";
import { isLoopbackAddress } from "#core/grpc/transport-security.ts";
import { Status } from "#core/grpc/errors.ts";
import { AdapterService } from "#core/gen/lightreasoner/v1/adapter_pb.ts";
import { InferenceService } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { TrainerService } from "#core/gen/lightreasoner/v1/trainer_pb.ts";

const TOKEN = "s3cret-token-0123456789";
const upload = AdapterService.method.uploadAdapter;
const generate = InferenceService.method.generate;

function call(authorization?: string | string[], peerCertificate?: object) {
  const metadata = new grpc.Metadata();
  for (const value of [authorization ?? []].flat()) metadata.add("authorization", value);
  return { metadata, peerCertificate };
}

const outcome = (error: ReturnType<typeof checkAccess>) => (error ? Status[error.code] : "OK");

describe("which methods mutate, as the contract says", () => {
  it("marks exactly the reads NO_SIDE_EFFECTS", () => {
    const reads = [InferenceService, AdapterService, TrainerService].flatMap((s) => s.methods.filter(isReadMethod).map((m) => m.name));
    expect(reads.sort()).toEqual(["Generate", "GetModelInfo", "GetRun", "ListAdapters", "ListRuns", "Score", "StreamTrajectories", "WatchRun"]);
    const writes = [AdapterService, TrainerService].flatMap((s) => s.methods.filter((m) => !isReadMethod(m)).map((m) => m.name));
    expect(writes.sort()).toEqual(["ActivateAdapter", "CancelRun", "LoadAdapter", "ResumeRun", "RollbackToBase", "StartRun", "UnloadAdapter", "UploadAdapter"]);
  });
});

describe("checkAccess with a token", () => {
  const policy = accessPolicy({ token: TOKEN });

  it("lets the right token through, case-insensitive scheme", () => {
    expect(outcome(checkAccess(policy, upload, call(`Bearer ${TOKEN}`)))).toBe("OK");
    expect(outcome(checkAccess(policy, upload, call(`bearer ${TOKEN}`)))).toBe("OK");
  });

  it("answers a missing or malformed credential UNAUTHENTICATED, a wrong token PERMISSION_DENIED", () => {
    expect(outcome(checkAccess(policy, upload, call()))).toBe("UNAUTHENTICATED");
    expect(checkAccess(policy, upload, call())!.message).toBe("UploadAdapter needs a credential: send `authorization: Bearer <token>` metadata");
    expect(outcome(checkAccess(policy, upload, call(TOKEN)))).toBe("UNAUTHENTICATED");
    expect(outcome(checkAccess(policy, upload, call("Basic dXNlcjpwYXNz")))).toBe("UNAUTHENTICATED");
    expect(outcome(checkAccess(policy, upload, call([`Bearer ${TOKEN}`, `Bearer ${TOKEN}`])))).toBe("UNAUTHENTICATED");
    // Same length, one character off; a prefix; the token with something appended.
    for (const wrong of [`${TOKEN.slice(0, -1)}x`, TOKEN.slice(0, 16), `${TOKEN}0`]) {
      const error = checkAccess(policy, upload, call(`Bearer ${wrong}`))!;
      expect(Status[error.code]).toBe("PERMISSION_DENIED");
      expect(error.message).toBe("UploadAdapter: the bearer token is not the one this server accepts");
      expect(error.message).not.toContain(wrong);
    }
  });

  it("leaves reads open unless told to protect them", () => {
    expect(outcome(checkAccess(policy, generate, call()))).toBe("OK");
    const closed = accessPolicy({ token: TOKEN, protectReads: true });
    expect(outcome(checkAccess(closed, generate, call()))).toBe("UNAUTHENTICATED");
    expect(outcome(checkAccess(closed, generate, call("Bearer wrong-token-but-long-enough")))).toBe("PERMISSION_DENIED");
    expect(outcome(checkAccess(closed, generate, call(`Bearer ${TOKEN}`)))).toBe("OK");
  });

  it("ignores a peer certificate when the server does not verify client certificates", () => {
    expect(outcome(checkAccess(policy, upload, call(undefined, { raw: Buffer.from("x") })))).toBe("UNAUTHENTICATED");
  });
});

describe("checkAccess with client certificates (mTLS)", () => {
  const policy = accessPolicy({ clientCertificates: true });

  it("takes a verified certificate as the credential, and refuses tokens it cannot check", () => {
    expect(outcome(checkAccess(policy, upload, call(undefined, { raw: Buffer.from("x") })))).toBe("OK");
    expect(checkAccess(policy, upload, call())!.message).toBe("UploadAdapter needs a credential: send a client certificate");
    expect(outcome(checkAccess(policy, upload, call(`Bearer ${TOKEN}`)))).toBe("PERMISSION_DENIED");
  });

  it("accepts either credential when both are configured", () => {
    const both = accessPolicy({ token: TOKEN, clientCertificates: true });
    expect(outcome(checkAccess(both, upload, call(undefined, { raw: Buffer.from("x") })))).toBe("OK");
    expect(outcome(checkAccess(both, upload, call(`Bearer ${TOKEN}`)))).toBe("OK");
  });
});

describe("a server with no credential configured", () => {
  it("refuses mutating calls, saying how to configure one, and serves reads", () => {
    const policy = accessPolicy({});
    const error = checkAccess(policy, upload, call(`Bearer ${TOKEN}`))!;
    expect(Status[error.code]).toBe("UNAUTHENTICATED");
    expect(error.message).toMatch(/started without one: give it --auth-token-file, LIGHTREASONER_AUTH_TOKEN or --tls-client-ca \(or --allow-unauthenticated/);
    expect(outcome(checkAccess(policy, generate, call()))).toBe("OK");
  });

  it("opens mutating calls only when told to, and never together with a credential", () => {
    expect(outcome(checkAccess(accessPolicy({ allowUnauthenticated: true }), upload, call()))).toBe("OK");
    expect(() => accessPolicy({ allowUnauthenticated: true, token: TOKEN })).toThrow(/contradicts a configured credential/);
  });
});

describe("checkToken", () => {
  it("refuses short, long and non-printable tokens without quoting them", () => {
    const short = "abc123";
    expect(() => checkToken(short, "--auth-token-file t")).toThrow("--auth-token-file t: the token has 6 characters; at least 16 are required");
    expect(() => checkToken("a".repeat(4097), "X")).toThrow("X: the token is longer than 4096 characters");
    expect(() => checkToken("with a space in the middle", "X")).toThrow("X: the token may hold only visible ASCII characters (no spaces or control characters)");
    expect(checkToken(TOKEN, "X")).toBe(TOKEN);
  });
});

describe("isLoopbackAddress (where a plain-text token stays on this machine)", () => {
  it("knows loopback addresses in every form the trainer accepts, and nothing else", () => {
    for (const address of ["127.0.0.1:50051", "127.1.2.3:1", "localhost:50051", "[::1]:50051", "dns:///localhost:50051"]) expect(isLoopbackAddress(address), address).toBe(true);
    for (const address of ["10.0.0.7:50051", "dns:///inference:50051", "inference-headless:50051", "128.0.0.1:1", "[::2]:50051"]) expect(isLoopbackAddress(address), address).toBe(false);
  });
});
