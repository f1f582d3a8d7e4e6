// The credential and TLS flags turned into settings (cli/security-flags.ts), in-process: where
// the token comes from and in which order, and every refusal of a bad combination or file,
// each naming the flag and none quoting the token. cli.test.ts runs the same code as commands.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { clientSecurity, readToken, serverSecurity } from "#cli/security-flags.ts";
import { makeCa } from "./helpers.ts";
import type { Pem, TestCa } from "./helpers.ts";

const TOKEN = "flags-token-1f2e3d4c5b6a";

describe("security flags", () => {
  let dir: string;
  let ca: TestCa;
  let server: Pem;
  let other: Pem;
  let tokenFile: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "lr-flags-"));
    ca = makeCa(dir, "flags-ca");
    server = ca.issue("server", "server");
    other = ca.issue("other", "client");
    tokenFile = join(dir, "token");
    writeFileSync(tokenFile, `${TOKEN}\n`);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("reads the token from the file (trailing newline dropped), else the environment, else none", () => {
    expect(readToken({ authTokenFile: tokenFile }, { LIGHTREASONER_AUTH_TOKEN: "from-the-environment-123" })).toBe(TOKEN);
    expect(readToken({}, { LIGHTREASONER_AUTH_TOKEN: "from-the-environment-123" })).toBe("from-the-environment-123");
    expect(readToken({}, {})).toBeNull();
    expect(readToken({}, { LIGHTREASONER_AUTH_TOKEN: "" })).toBeNull();
  });

  it("refuses unreadable and weak tokens, naming the source and not the token", () => {
    expect(() => readToken({ authTokenFile: join(dir, "missing") }, {})).toThrow(`--auth-token-file ${join(dir, "missing")}: ENOENT`);
    expect(() => readToken({}, { LIGHTREASONER_AUTH_TOKEN: "pa ss word with spaces" })).toThrow("LIGHTREASONER_AUTH_TOKEN: the token may hold only visible ASCII characters");
    try {
      readToken({}, { LIGHTREASONER_AUTH_TOKEN: "hunter2" });
      expect.unreachable();
    } catch (err) {
      expect((err as Error).message).toBe("LIGHTREASONER_AUTH_TOKEN: the token has 7 characters; at least 16 are required");
      expect((err as Error).name).toBe("UsageError");
    }
  });

  it("builds server settings: token, TLS, mTLS", () => {
    const plain = serverSecurity({ authTokenFile: tokenFile }, {});
    expect(plain).toEqual({ access: { token: TOKEN, protectReads: false, allowUnauthenticated: false }, tls: null });
    const mutual = serverSecurity({ tlsCert: server.certFile, tlsKey: server.keyFile, tlsClientCa: ca.certFile, protectReads: true }, {});
    expect(mutual.access).toEqual({ token: null, protectReads: true, allowUnauthenticated: false });
    expect(mutual.tls).toEqual({ cert: server.cert, key: server.key, clientCa: ca.cert });
  });

  it("refuses contradictory or incomplete server settings", () => {
    expect(() => serverSecurity({ allowUnauthenticated: true }, { LIGHTREASONER_AUTH_TOKEN: TOKEN })).toThrow("--allow-unauthenticated contradicts the credential given (LIGHTREASONER_AUTH_TOKEN): choose one");
    expect(() => serverSecurity({ allowUnauthenticated: true, authTokenFile: tokenFile }, {})).toThrow("(--auth-token-file)");
    expect(() => serverSecurity({ tlsCert: server.certFile }, {})).toThrow("--tls-cert and --tls-key go together: give both or neither");
    expect(() => serverSecurity({ tlsClientCa: ca.certFile }, {})).toThrow("--tls-client-ca needs --tls-cert and --tls-key: client certificates are checked only over TLS");
    expect(() => serverSecurity({ tlsCert: server.certFile, tlsKey: other.keyFile }, {})).toThrow(`--tls-key ${other.keyFile} is not the private key of --tls-cert ${server.certFile}`);
    expect(() => serverSecurity({ tlsCert: tokenFile, tlsKey: server.keyFile }, {})).toThrow(`--tls-cert ${tokenFile}: not a PEM certificate`);
    expect(() => serverSecurity({ tlsCert: server.certFile, tlsKey: tokenFile }, {})).toThrow(`--tls-key ${tokenFile}: not a PEM private key`);
  });

  it("builds client settings, with the flag prefix in messages", () => {
    expect(clientSecurity({}, TOKEN)).toEqual({ token: TOKEN, tls: null });
    expect(clientSecurity({ tlsCa: ca.certFile, tlsCert: other.certFile, tlsKey: other.keyFile }, null, "inference-")).toEqual({ token: null, tls: { ca: ca.cert, cert: other.cert, key: other.key } });
    expect(() => clientSecurity({ tlsCert: other.certFile, tlsKey: other.keyFile }, null, "inference-")).toThrow("--inference-tls-cert is for TLS: give --inference-tls-ca too");
    expect(() => clientSecurity({ tlsCa: ca.certFile, tlsKey: other.keyFile }, null, "inference-")).toThrow("--inference-tls-cert and --inference-tls-key go together");
  });
});
