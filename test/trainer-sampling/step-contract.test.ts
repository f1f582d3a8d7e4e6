// The sampler against an inference server that breaks the trajectory contract in one way at a
// time: a step without the token of its ScoredPosition, a step at the wrong position, a step
// from another adapter than the trajectory started on. The sampler names the flaw, cancels the
// trajectory, retries its problem, and after max_retries fails the run UNAVAILABLE with that
// reason. The server is a small InferenceService written here, on a real loopback socket.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addService, GrpcError, Status } from "#core/grpc/adapter.ts";
import type { ServiceHandlers } from "#core/grpc/adapter.ts";
import { FinishReason } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { InferenceService } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import type { TrajectoryStepSchema } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import type { SamplingEvent } from "#trainer/sampling/sampler.ts";
import { listen } from "#test/contract/loopback.ts";
import type { Loopback } from "#test/contract/loopback.ts";
import { runSampling, writeProblems } from "./helpers.ts";

type InferenceMethods = typeof InferenceService extends { method: infer M } ? M : never;

const PROMPT_IDS = [1, 2, 3];
/** The one step every trajectory of the current test sends after it starts. */
let flawedStep: MessageInitShape<typeof TrajectoryStepSchema> = {};

const unimplemented = () => {
  throw new GrpcError(Status.UNIMPLEMENTED, "not in this test");
};

const inference: ServiceHandlers<InferenceMethods> = {
  getModelInfo() {
    return {
      expert: { fingerprint: "expert" },
      amateur: { fingerprint: "amateur" },
      tokenizer: { fingerprint: "tokenizer" },
      vocabSize: 64,
      limits: { maxNewTokens: 128, maxPromptTokens: 512, maxTrajectoriesPerStream: 8, maxTopK: 8 },
    };
  },
  async streamTrajectories(requests, send) {
    const sent: Promise<unknown>[] = [];
    for await (const request of requests) {
      if (request.action.case !== "start") continue;
      const { requestId } = request;
      const seed = request.action.value.sampling?.seed ?? 0;
      sent.push(
        (async () => {
          await send({ requestId, event: { case: "started", value: { promptTokenIds: PROMPT_IDS, seed } } });
          await send({ requestId, event: { case: "step", value: flawedStep } });
          await send({ requestId, event: { case: "finished", value: { end: { finishReason: FinishReason.LENGTH, usage: { promptTokens: 3, completionTokens: 1 } } } } });
        })(),
      );
    }
    await Promise.all(sent);
  },
  generate: unimplemented,
  score: unimplemented,
};

let loopback: Loopback;
let dir: string;

beforeAll(async () => {
  const server = new grpc.Server();
  addService(server, InferenceService, inference);
  loopback = await listen(server);
  dir = mkdtempSync(join(tmpdir(), "lr-step-contract-"));
});
afterAll(() => {
  loopback?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("the sampler refuses steps that break the trajectory contract", () => {
  const cases: [string, MessageInitShape<typeof TrajectoryStepSchema>, RegExp][] = [
    ["a step without scored.token_id", { step: 0, tokenText: "a", scored: { position: 3 } }, /step 0 has no scored\.token_id/],
    ["a step with no ScoredPosition at all", { step: 0, tokenText: "a" }, /step 0 has no scored\.token_id/],
    ["a step at the wrong position", { step: 0, scored: { position: 7, tokenId: 5 } }, /step 0 has position 7, expected 3/],
    ["a step from another adapter", { step: 0, adapterVersion: "v2", scored: { position: 3, tokenId: 5 } }, /step 0 came from adapter "v2", the trajectory started on ""/],
  ];
  it.each(cases)("%s: retried, then the run fails UNAVAILABLE naming it", async (name, step, reason) => {
    flawedStep = step;
    const retries: string[] = [];
    const onEvent = (e: SamplingEvent) => {
      if (e.type === "retry") retries.push(e.reason);
    };
    const { problems } = writeProblems(dir, 1);
    const run = runSampling({ targets: [loopback.address], storePath: join(dir, `${name.replaceAll(" ", "-")}.jsonl`), problems, config: { maxRetries: 1 }, onEvent });
    const err = (await run.then(
      () => null,
      (e: unknown) => e,
    )) as GrpcError | null;
    expect(err).toBeInstanceOf(GrpcError);
    expect(err!.code).toBe(Status.UNAVAILABLE);
    expect(err!.message).toMatch(/failed 2 times/);
    expect(err!.message).toMatch(reason);
    expect(retries).toHaveLength(1);
    expect(retries[0]).toMatch(reason);
  });
});
