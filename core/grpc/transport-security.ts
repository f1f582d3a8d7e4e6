// Transport security for both sides of a connection, from PEM contents (the CLI reads the
// files): a server's TLS credentials (with a client CA, mTLS: clients without a certificate
// the CA signed fail the handshake), and a client's channel credentials plus its bearer token.
// Over TLS the token rides as grpc-js call credentials; grpc-js refuses to compose call
// credentials with an insecure channel, so on a plain-text channel (loopback, or a cluster's
// private network) the token is added to each call's metadata by an interceptor instead.
import * as grpc from "@grpc/grpc-js";
import { AUTHORIZATION_METADATA_KEY } from "./access.ts";

/** A server's TLS identity; with `clientCa`, clients must present a certificate it signed. */
export interface ServerTls {
  cert: Buffer;
  key: Buffer;
  clientCa?: Buffer | null;
}

/** How a client reaches a server: TLS or not, and the token it presents. */
export interface ClientSecurity {
  /** Sent as `authorization: Bearer <token>` with every call. */
  token?: string | null;
  /** TLS: the roots that verify the server (absent: the system's), and for mTLS a certificate and key. */
  tls?: { ca?: Buffer | null; cert?: Buffer | null; key?: Buffer | null } | null;
}

export function serverCredentials(tls: ServerTls | null | undefined): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(tls.clientCa ?? null, [{ cert_chain: tls.cert, private_key: tls.key }], Boolean(tls.clientCa));
}

/** For a startup log: how a server's port is secured. */
export const tlsMode = (tls: ServerTls | null | undefined) => (!tls ? "off" : tls.clientCa ? "mutual TLS" : "TLS");

/** The channel credentials and interceptors that carry `security` on a grpc-js client. */
export function clientTransport(security: ClientSecurity | undefined): { credentials: grpc.ChannelCredentials; interceptors: grpc.Interceptor[] } {
  const token = security?.token ?? null;
  const tls = security?.tls ?? null;
  const authorization = token === null ? null : `Bearer ${token}`;
  if (tls) {
    if (Boolean(tls.cert) !== Boolean(tls.key)) throw new Error("a client certificate needs its private key, and a key its certificate");
    const channel = grpc.credentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null);
    if (authorization === null) return { credentials: channel, interceptors: [] };
    const call = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
      const metadata = new grpc.Metadata();
      metadata.set(AUTHORIZATION_METADATA_KEY, authorization);
      callback(null, metadata);
    });
    return { credentials: grpc.credentials.combineChannelCredentials(channel, call), interceptors: [] };
  }
  const insecure = grpc.credentials.createInsecure();
  if (authorization === null) return { credentials: insecure, interceptors: [] };
  const bearer: grpc.Interceptor = (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set(AUTHORIZATION_METADATA_KEY, authorization);
        next(metadata, listener);
      },
    });
  return { credentials: insecure, interceptors: [bearer] };
}

/** True when `address` ("host:port") names this machine, where plain text never leaves it. */
export function isLoopbackAddress(address: string): boolean {
  const host = address.replace(/^dns:\/{0,3}/, "").replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");
  return host === "localhost" || host === "::1" || /^127(\.\d{1,3}){3}$/.test(host);
}
