// The HTTP/2 receive window the project's clients open (CLIENT_FLOW_CONTROL_WINDOW_BYTES), as
// the server sees it: a plain Node HTTP/2 server on loopback reads the SETTINGS frame a
// client sends and the connection window it grants, then answers the call UNIMPLEMENTED.
import { createServer } from "node:http2";
import type { Http2Server, Http2Session, Settings } from "node:http2";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { CLIENT_FLOW_CONTROL_WINDOW_BYTES, createClient, GrpcError, Status } from "#core/grpc/adapter.ts";
import type { ClientOptions } from "#core/grpc/adapter.ts";
import { InferenceService } from "#core/gen/lightreasoner/v1/inference_pb.ts";

/** HTTP/2's initial window (RFC 9113), what grpc-js itself would open. */
const HTTP2_DEFAULT_WINDOW = 65_535;

interface Seen {
  /** The client's SETTINGS_INITIAL_WINDOW_SIZE: what each call may receive ahead of reading. */
  streamWindow: number | undefined;
  /** How much the client lets the server send on the whole connection, once the call arrived. */
  connectionWindow: number | undefined;
}

let server: Http2Server | null = null;

afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = null;
});

/** Makes one call through createClient(options) and returns what the server saw of the client's windows. */
async function windowsOf(options: ClientOptions): Promise<Seen> {
  const seen: Seen = { streamWindow: undefined, connectionWindow: undefined };
  const sessions: Http2Session[] = [];
  server = createServer();
  server.on("session", (session) => {
    sessions.push(session);
    session.on("remoteSettings", (settings: Settings) => (seen.streamWindow = settings.initialWindowSize));
  });
  server.on("stream", (stream) => {
    seen.connectionWindow = stream.session?.state.remoteWindowSize;
    stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": String(Status.UNIMPLEMENTED), "grpc-message": "window probe" }, { endStream: true });
  });
  await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
  const client = createClient(InferenceService, `127.0.0.1:${(server.address() as AddressInfo).port}`, options);
  try {
    const failure = await client.getModelInfo({}).then(
      () => null,
      (err: unknown) => err,
    );
    expect(failure).toBeInstanceOf(GrpcError);
    expect((failure as GrpcError).code).toBe(Status.UNIMPLEMENTED);
  } finally {
    client.close();
    for (const session of sessions) session.destroy();
  }
  return seen;
}

describe("the project's gRPC client", () => {
  it("opens an 8 MiB window per call and per connection, not HTTP/2's 64 KiB", async () => {
    const seen = await windowsOf({});
    expect(CLIENT_FLOW_CONTROL_WINDOW_BYTES).toBe(8 * 2 ** 20);
    expect(seen.streamWindow).toBe(CLIENT_FLOW_CONTROL_WINDOW_BYTES);
    expect(seen.connectionWindow).toBeGreaterThanOrEqual(CLIENT_FLOW_CONTROL_WINDOW_BYTES - HTTP2_DEFAULT_WINDOW);
  });

  it("takes the window from channelOptions where a caller sets one", async () => {
    const seen = await windowsOf({ channelOptions: { "grpc-node.flow_control_window": HTTP2_DEFAULT_WINDOW } });
    expect(seen.streamWindow).toBe(HTTP2_DEFAULT_WINDOW);
    expect(seen.connectionWindow).toBeLessThanOrEqual(HTTP2_DEFAULT_WINDOW);
  });
});
