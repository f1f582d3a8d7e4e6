// The servers the security tests attack: an inference server on the tiny random pair (with a
// directory LoadAdapter may read from) and a trainer beside it, on loopback, plus one raw
// grpc-js client per server for sending bytes no typed client would.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import type { InferenceServer } from "#inference/main.ts";
import { clients, startServer, writeTinyPair } from "#test/inference/helpers.ts";
import type { TinyPair } from "#test/inference/helpers.ts";
import { startTrainer } from "#test/trainer/helpers.ts";
import { writeProblems } from "#test/trainer-sampling/helpers.ts";

export interface SecurityServers {
  pair: TinyPair;
  inference: InferenceServer;
  typed: ReturnType<typeof clients>;
  /** Directory under which LoadAdapter may read adapters. */
  adapterDir: string;
  problemsFile: string;
  trainer: Awaited<ReturnType<typeof startTrainer>> | null;
  raw: { inference: grpc.Client; trainer: grpc.Client | null };
  close(): Promise<void>;
}

export async function startSecurityServers(options: { trainer: boolean }): Promise<SecurityServers> {
  const pair = writeTinyPair();
  const adapterDir = join(pair.root, "adapters");
  mkdirSync(adapterDir);
  const inference = await startServer(pair, { adapterDirs: [adapterDir] });
  const problemsFile = writeProblems(pair.root, 4).file;
  const trainer = options.trainer ? await startTrainer(pair.expertDir, [inference.address], join(pair.root, "runs")) : null;
  const raw = {
    inference: new grpc.Client(inference.address, grpc.credentials.createInsecure()),
    trainer: trainer ? new grpc.Client(trainer.server.address, grpc.credentials.createInsecure()) : null,
  };
  const typed = clients(inference);
  return {
    pair,
    inference,
    typed,
    adapterDir,
    problemsFile,
    trainer,
    raw,
    close: async () => {
      raw.inference.close();
      raw.trainer?.close();
      typed.close();
      await trainer?.close();
      await inference.close(1000);
      pair.remove();
    },
  };
}
