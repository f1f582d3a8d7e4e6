// TrainerService's handlers: thin translations between the contract and the run manager,
// which validates, executes and remembers runs. WatchRun numbers its events from 0 on each
// call and stamps their time.
import { timestampNow } from "@bufbuild/protobuf/wkt";
import type { ServiceHandlers } from "#core/grpc/adapter.ts";
import type { TrainerService } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import type { RunManager } from "#trainer/runs/run-manager.ts";

type Methods = (typeof TrainerService)["method"];

export function trainerHandlers(runs: RunManager): ServiceHandlers<Methods> {
  return {
    startRun: async (request) => ({ run: await runs.start(request.config, request.runId, request.validateOnly) }),
    resumeRun: async (request) => ({ run: await runs.resume(request.runId) }),
    getRun: (request) => ({ run: runs.get(request.runId) }),
    listRuns: (request) => ({ runs: runs.list(request.state) }),
    cancelRun: async (request) => ({ run: await runs.cancel(request.runId) }),
    async watchRun(request, send, call) {
      let sequence = 0;
      for await (const event of runs.watch(request.runId, call.signal)) {
        await send({ sequence: sequence++, time: timestampNow(), event });
      }
    },
  };
}
