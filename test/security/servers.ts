// The servers the security tests attack: an inference server on the tiny random pair (with a
// directory LoadAdapter may read from) and a trainer beside it, on loopback, plus one raw
// grpc-js client per server for sending bytes no typed client would; and adapters that fit
// the tiny expert.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { SeededRandom } from "#core/math/random.ts";
import { parseModelConfig } from "#core/model/config.ts";
import { loraTargets } from "#core/model/lora.ts";
import type { LoraAdapter, LoraSettings } from "#core/model/lora.ts";
import type { InferenceServer } from "#inference/main.ts";
import type { ServerLimits } from "#inference/server/limits.ts";
import { clients, EXPERT_CONFIG, startServer, writeTinyPair } from "#test/inference/helpers.ts";
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

export async function startSecurityServers(options: { trainer: boolean; limits?: Partial<ServerLimits> }): Promise<SecurityServers> {
  const pair = writeTinyPair();
  const adapterDir = join(pair.root, "adapters");
  mkdirSync(adapterDir);
  const inference = await startServer(pair, { adapterDirs: [adapterDir], limits: options.limits });
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

/** A rank-2 LoRA adapter for the tiny expert with small random A and B. */
export function randomAdapter(seed: number, targetModules: LoraSettings["targetModules"] = ["q_proj", "v_proj"]): LoraAdapter {
  const settings: LoraSettings = { rank: 2, alpha: 4, dropout: 0, targetModules };
  const rng = new SeededRandom(seed);
  const random = (n: number) => Float32Array.from({ length: n }, () => 0.1 * rng.normal());
  const pairs: LoraAdapter["pairs"] = new Map();
  for (const { name, shape: [out, inFeatures] } of loraTargets(parseModelConfig(EXPERT_CONFIG), settings)) {
    pairs.set(name, { a: { shape: [settings.rank, inFeatures], data: random(settings.rank * inFeatures) }, b: { shape: [out, settings.rank], data: random(out * settings.rank) } });
  }
  return { settings, pairs };
}
