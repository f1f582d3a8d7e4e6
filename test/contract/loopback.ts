// A real grpc-js server on a loopback port chosen by the OS, for the contract tests.
import * as grpc from "@grpc/grpc-js";

export interface Loopback {
  server: grpc.Server;
  address: string;
  /** Ends every call still open and closes the port. */
  stop(): void;
}

/** Binds `server` to 127.0.0.1 on a free port (its services must already be added). */
export async function listen(server: grpc.Server): Promise<Loopback> {
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, bound) => (err ? reject(err) : resolve(bound))),
  );
  return {
    server,
    address: `127.0.0.1:${port}`,
    stop: () => server.forceShutdown(),
  };
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
