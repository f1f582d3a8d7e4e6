// Calls a method with raw bytes as its request messages, as a client with a broken or hostile
// encoder would: the bytes go out as they are (grpc-js only frames them) and what comes back is
// the call's final status. Every call carries a deadline, so a server that never answers shows
// up as DEADLINE_EXCEEDED instead of a test that hangs.
import type { DescMethod } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { methodPath } from "#core/grpc/adapter.ts";

export interface RawAnswer {
  code: grpc.status;
  details: string;
  /** Response messages received before the status. */
  messages: number;
  ms: number;
}

/** The parts of a method a raw call needs: its path and which sides stream. */
export interface RawMethod {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
}

export function rawMethod(method: DescMethod): RawMethod {
  return {
    path: methodPath(method),
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
  };
}

const asIs = (bytes: Buffer) => bytes;

/**
 * Sends `payloads` (exactly one for a unary or server-streaming method; any number, then a
 * half-close, for a request stream) and resolves with the status; never rejects.
 */
export function rawCall(client: grpc.Client, method: RawMethod, payloads: Uint8Array[], deadlineMs: number): Promise<RawAnswer> {
  const started = performance.now();
  const deadline = new Date(Date.now() + deadlineMs);
  const buffers = payloads.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength));
  if (!method.requestStream && buffers.length !== 1) throw new Error(`${method.path} takes exactly one request message`);
  return new Promise((resolve) => {
    let messages = 0;
    const finish = (status: Partial<grpc.StatusObject>) => resolve({ code: status.code ?? grpc.status.UNKNOWN, details: status.details ?? "", messages, ms: performance.now() - started });
    const metadata = new grpc.Metadata();
    // The "status" event comes once per call, with the final status, whatever the method kind.
    let call: grpc.ClientUnaryCall | grpc.ClientReadableStream<Buffer> | grpc.ClientWritableStream<Buffer> | grpc.ClientDuplexStream<Buffer, Buffer>;
    const ignore = () => {};
    if (!method.requestStream && !method.responseStream) {
      call = client.makeUnaryRequest(method.path, asIs, asIs, buffers[0], metadata, { deadline }, (_err, response) => {
        if (response) messages++;
      });
    } else if (!method.requestStream) {
      call = client.makeServerStreamRequest(method.path, asIs, asIs, buffers[0], metadata, { deadline });
    } else if (!method.responseStream) {
      call = client.makeClientStreamRequest(method.path, asIs, asIs, metadata, { deadline }, (_err, response) => {
        if (response) messages++;
      });
    } else {
      call = client.makeBidiStreamRequest(method.path, asIs, asIs, metadata, { deadline });
    }
    call.on("status", finish);
    if (method.responseStream || method.requestStream) {
      // Errors are also reported as the status; without a listener a stream's "error" would throw.
      (call as grpc.ClientDuplexStream<Buffer, Buffer>).on("error", ignore);
    }
    if (method.responseStream) (call as grpc.ClientReadableStream<Buffer>).on("data", () => messages++);
    if (method.requestStream) {
      const writable = call as grpc.ClientWritableStream<Buffer>;
      for (const buffer of buffers) writable.write(buffer);
      writable.end();
    }
  });
}
