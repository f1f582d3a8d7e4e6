// The credential and TLS flags, shared by the commands that serve (`serve inference`,
// `serve trainer`) and those that call a service (`runs`, the trainer's own calls to its
// inference endpoints, `sample`/`train --push`/`eval`). Files are read and checked here, so a
// wrong path or a key that does not match its certificate stops the command before anything
// listens, with the flag named; the token itself is never printed.
import { X509Certificate, createPrivateKey } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import type { Command } from "commander";
import { checkToken } from "#core/grpc/access.ts";
import type { AccessOptions } from "#core/grpc/access.ts";
import type { ClientSecurity, ServerTls } from "#core/grpc/transport-security.ts";
import { UsageError } from "#cli/options.ts";

/** The environment variable holding the token when no --auth-token-file is given. */
export const TOKEN_ENV = "LIGHTREASONER_AUTH_TOKEN";
/** Far above any token or PEM bundle; a larger "file" is a mistake (a device, a directory of logs). */
const MAX_FILE_BYTES = 1 << 20;

export interface TokenFlags {
  authTokenFile?: string;
}

export interface ServerSecurityFlags extends TokenFlags {
  protectReads?: boolean;
  allowUnauthenticated?: boolean;
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
}

export interface ClientSecurityFlags extends TokenFlags {
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

const tokenHelp = `file holding the bearer token (default: $${TOKEN_ENV})`;

/** `tokenUse` adds to the token's help what else the command does with it. */
export function addServerSecurityOptions(command: Command, tokenUse = ""): Command {
  return command
    .option("--auth-token-file <file>", `${tokenHelp}; mutating calls must present it${tokenUse}`)
    .option("--protect-reads", "require the credential for read calls too (Generate, Score, ListRuns...)")
    .option("--allow-unauthenticated", "with no credential configured, let anyone call mutating methods (default: refuse them)")
    .option("--tls-cert <file>", "serve gRPC over TLS with this certificate chain (PEM); needs --tls-key")
    .option("--tls-key <file>", "the private key of --tls-cert (PEM)")
    .option("--tls-client-ca <file>", "require client certificates signed by this CA (mutual TLS); a verified certificate counts as the credential");
}

/** Client flags; `prefix` ("inference-") names the connection when a command has several. */
export function addClientSecurityOptions(command: Command, { prefix = "", token = true, what = "the server" } = {}): Command {
  if (token) command.option("--auth-token-file <file>", `${tokenHelp}, sent to ${what}`);
  return command
    .option(`--${prefix}tls-ca <file>`, `reach ${what} over TLS, verifying the server certificate against this CA (PEM)`)
    .option(`--${prefix}tls-cert <file>`, `client certificate (PEM) for mutual TLS with ${what}; needs --${prefix}tls-key`)
    .option(`--${prefix}tls-key <file>`, `the private key of --${prefix}tls-cert (PEM)`);
}

function readFlagFile(flag: string, file: string): Buffer {
  try {
    const size = statSync(file).size;
    if (size > MAX_FILE_BYTES) throw new UsageError(`${flag} ${file}: ${size} bytes; at most ${MAX_FILE_BYTES} expected`);
    return readFileSync(file);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`${flag} ${file}: ${(err as Error).message}`);
  }
}

/** The token from --auth-token-file, else from $LIGHTREASONER_AUTH_TOKEN; null when neither is set. */
export function readToken(flags: TokenFlags, env: NodeJS.ProcessEnv = process.env): string | null {
  const [source, text] = flags.authTokenFile !== undefined ? [`--auth-token-file ${flags.authTokenFile}`, readFlagFile("--auth-token-file", flags.authTokenFile).toString("utf8")] : [TOKEN_ENV, env[TOKEN_ENV]];
  if (text === undefined || text === "") return null;
  try {
    // A file written by `echo` ends with a newline that is not part of the token.
    return checkToken(text.trimEnd(), source);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function certificate(flag: string, file: string): { pem: Buffer; parsed: X509Certificate } {
  const pem = readFlagFile(flag, file);
  try {
    return { pem, parsed: new X509Certificate(pem) };
  } catch (err) {
    throw new UsageError(`${flag} ${file}: not a PEM certificate (${(err as Error).message})`);
  }
}

/** A certificate and its key, checked to belong together. */
function keyPair(certFlag: string, certFile: string | undefined, keyFlag: string, keyFile: string | undefined): { cert: Buffer; key: Buffer } | null {
  if (certFile === undefined && keyFile === undefined) return null;
  if (certFile === undefined || keyFile === undefined) throw new UsageError(`${certFlag} and ${keyFlag} go together: give both or neither`);
  const cert = certificate(certFlag, certFile);
  const key = readFlagFile(keyFlag, keyFile);
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    throw new UsageError(`${keyFlag} ${keyFile}: not a PEM private key (${(err as Error).message})`);
  }
  if (!cert.parsed.checkPrivateKey(privateKey)) throw new UsageError(`${keyFlag} ${keyFile} is not the private key of ${certFlag} ${certFile}`);
  return { cert: cert.pem, key };
}

export function serverSecurity(flags: ServerSecurityFlags, env: NodeJS.ProcessEnv = process.env): { access: AccessOptions; tls: ServerTls | null } {
  const token = readToken(flags, env);
  const pair = keyPair("--tls-cert", flags.tlsCert, "--tls-key", flags.tlsKey);
  if (flags.tlsClientCa !== undefined && !pair) throw new UsageError("--tls-client-ca needs --tls-cert and --tls-key: client certificates are checked only over TLS");
  const clientCa = flags.tlsClientCa === undefined ? null : certificate("--tls-client-ca", flags.tlsClientCa).pem;
  if (flags.allowUnauthenticated && (token !== null || clientCa !== null)) {
    throw new UsageError(`--allow-unauthenticated contradicts the credential given (${token !== null ? (flags.authTokenFile !== undefined ? "--auth-token-file" : TOKEN_ENV) : "--tls-client-ca"}): choose one`);
  }
  return {
    access: { token, protectReads: flags.protectReads === true, allowUnauthenticated: flags.allowUnauthenticated === true },
    tls: pair ? { ...pair, clientCa } : null,
  };
}

/**
 * How a client reaches a server, from the files its TLS flags name (`prefix` as in
 * addClientSecurityOptions, for the messages) and the token it presents.
 */
export function clientSecurity(files: Omit<ClientSecurityFlags, "authTokenFile">, token: string | null, prefix = ""): ClientSecurity {
  const name = (flag: string) => `--${prefix}${flag}`;
  const pair = keyPair(name("tls-cert"), files.tlsCert, name("tls-key"), files.tlsKey);
  if (pair && files.tlsCa === undefined) throw new UsageError(`${name("tls-cert")} is for TLS: give ${name("tls-ca")} too`);
  const ca = files.tlsCa === undefined ? null : certificate(name("tls-ca"), files.tlsCa).pem;
  return { token, tls: ca ? { ca, ...pair } : null };
}
