import { create, fromBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { DistributionEncoding } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { LrSchedule, ProblemFormat, RunConfigSchema, RunMode, SamplingAdapter, SamplingConfigSchema, TrainingMethod } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import type { RunConfig } from "#core/gen/lightreasoner/v1/trainer_pb.ts";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Status } from "#core/grpc/adapter.ts";
import { RunConfigError } from "./errors.ts";
import { resolvedRunConfig, resolveRunPlan } from "./run-config.ts";

const defaults = { endpoints: ["127.0.0.1:50051"], drawSeed: () => 99 };
const config = (init: MessageInitShape<typeof RunConfigSchema>): RunConfig => create(RunConfigSchema, init);
const minimal = { problems: { path: "train.jsonl" } };

function fieldOf(init: MessageInitShape<typeof RunConfigSchema>): string {
  try {
    resolveRunPlan(config(init), defaults);
  } catch (err) {
    expect(err).toBeInstanceOf(RunConfigError);
    return (err as RunConfigError).field;
  }
  throw new Error("the config was accepted");
}

describe("resolveRunPlan", () => {
  it("fills the method's reference settings and the trainer's endpoints into an empty config", () => {
    const plan = resolveRunPlan(config(minimal), defaults);
    expect(plan).toMatchObject({ mode: "offline", method: "lightreasoner", endpoints: ["127.0.0.1:50051"], seed: 99, evalProblems: null, samplingAdapter: "base", activateFinalAdapter: false });
    expect(plan.sampler).toMatchObject({ beta: 0.4, alpha: 0.2, maxNewTokens: 128, systemPrompt: "Please reason step by step.", encoding: "sparse", seed: 99 });
    expect(plan.training).toMatchObject({ learningRate: 5e-5, batchSize: 8, gradientAccumulation: 2, maxSteps: 1000, seed: 99 });
    expect(plan.training.lora).toEqual({ rank: 8, alpha: 16, dropout: 0.05, targetModules: ["q_proj", "v_proj"] });
    expect(plan.problems).toEqual({ path: "train.jsonl", layout: "detect", offset: 0, limit: 0 });
  });

  it("maps every set field onto the plan", () => {
    const plan = resolveRunPlan(
      config({
        mode: RunMode.ONLINE,
        method: TrainingMethod.SFT,
        problems: { path: "p.jsonl", format: ProblemFormat.GSM8K, offset: 3, limit: 7 },
        inferenceEndpoints: ["a:1", "dns:///b:2"],
        sampling: { params: { temperature: 0.7, topP: 0.9, maxNewTokens: 64, stopStrings: ["###"] }, systemPrompt: "", encoding: DistributionEncoding.FULL, concurrency: 3, adapter: SamplingAdapter.LATEST_PUSHED },
        selection: { beta: 0.25, alpha: 0.5 },
        lora: { rank: 4, alpha: 8, dropout: 0, targetModules: ["o_proj"] },
        optimization: { learningRate: 1e-3, batchSize: 2, gradientAccumulation: 1, maxSteps: 10, warmupSteps: 2, weightDecay: 0.01, schedule: LrSchedule.COSINE, checkpointEverySteps: 5, pushEverySteps: 3 },
        sft: { attemptsPerProblem: 4, maxTunedTokens: 4800, maxWallSeconds: 17.5 },
        seed: 5,
        activateFinalAdapter: true,
      }),
      { ...defaults, allowedEndpoints: ["a:1", "dns:///b:2"] },
    );
    expect(plan).toMatchObject({ mode: "online", method: "sft", endpoints: ["a:1", "dns:///b:2"], seed: 5, samplingAdapter: "latest_pushed", activateFinalAdapter: true });
    expect(plan.problems).toEqual({ path: "p.jsonl", layout: "gsm8k", offset: 3, limit: 7 });
    expect(plan.sampler).toMatchObject({ temperature: 0.7, topP: 0.9, maxNewTokens: 64, systemPrompt: "", stopStrings: ["###"], encoding: "full", concurrency: 3, beta: 0.25, alpha: 0.5, sftAttempts: 4 });
    expect(plan.training).toMatchObject({ learningRate: 1e-3, batchSize: 2, maxSteps: 10, warmupSteps: 2, weightDecay: 0.01, schedule: "cosine", checkpointEverySteps: 5, pushEverySteps: 3 });
    expect(plan.training.lora).toMatchObject({ rank: 4, alpha: 8, dropout: 0, targetModules: ["o_proj"] });
    expect(plan.training).toMatchObject({ maxTunedTokens: 4800, maxWallSeconds: 17.5 });
    // 0 is no budget, as unset is; the resolved config reports 0 for none.
    const unbudgeted = resolveRunPlan(config({ ...minimal, method: TrainingMethod.SFT, sft: { maxTunedTokens: 0, maxWallSeconds: 0 } }), defaults);
    expect(unbudgeted.training.maxTunedTokens).toBeUndefined();
    expect(unbudgeted.training.maxWallSeconds).toBeUndefined();
    expect(resolvedRunConfig(unbudgeted).sft).toMatchObject({ maxTunedTokens: 0, maxWallSeconds: 0 });
    expect(resolvedRunConfig(plan).sft).toMatchObject({ attemptsPerProblem: 4, maxTunedTokens: 4800, maxWallSeconds: 17.5 });
  });

  it("resolves to a RunConfig that resolves to the same plan (what run.json keeps and a resume reads)", () => {
    const plan = resolveRunPlan(config({ ...minimal, selection: { beta: 0.3 }, optimization: { maxSteps: 50 } }), defaults);
    const again = resolveRunPlan(resolvedRunConfig(plan), { endpoints: defaults.endpoints, drawSeed: () => 1 });
    expect(again).toEqual(plan);
    const pinned = resolveRunPlan(config({ ...minimal, mode: RunMode.ONLINE, sampling: { adapter: SamplingAdapter.LATEST_PUSHED }, activateFinalAdapter: true }), defaults);
    expect(resolveRunPlan(resolvedRunConfig(pinned), { endpoints: defaults.endpoints })).toEqual(pinned);
  });

  it("names the bad field by its proto path", () => {
    expect(fieldOf({ ...minimal, selection: { beta: -0.1 } })).toBe("selection.beta");
    expect(fieldOf({ ...minimal, selection: { alpha: 1.5 } })).toBe("selection.alpha");
    expect(fieldOf({ ...minimal, selection: { alpha: 0 } })).toBe("selection.alpha");
    expect(fieldOf({ ...minimal, lora: { rank: 0 } })).toBe("lora.rank");
    expect(fieldOf({ ...minimal, lora: { targetModules: ["attn"] } })).toBe("lora.target_modules.0");
    expect(fieldOf({ ...minimal, optimization: { learningRate: 0 } })).toBe("optimization.learning_rate");
    expect(fieldOf({ ...minimal, optimization: { maxSteps: 5, warmupSteps: 5 } })).toBe("optimization.warmup_steps");
    expect(fieldOf({ ...minimal, sampling: { params: { topP: 0 } } })).toBe("sampling.params.top_p");
    expect(fieldOf({ ...minimal, sampling: { params: { seed: 3 } } })).toBe("sampling.params.seed");
    expect(fieldOf({ ...minimal, sampling: { encoding: DistributionEncoding.NONE } })).toBe("sampling.encoding");
    expect(fieldOf({ ...minimal, sft: { attemptsPerProblem: 0 }, method: TrainingMethod.SFT })).toBe("sft.attempts_per_problem");
    expect(fieldOf({ ...minimal, sft: { maxTunedTokens: 100 } })).toBe("sft.max_tuned_tokens");
    expect(fieldOf({ ...minimal, sft: { maxWallSeconds: 10 } })).toBe("sft.max_wall_seconds");
    expect(fieldOf({ ...minimal, method: TrainingMethod.SFT, sft: { maxWallSeconds: -1 } })).toBe("sft.max_wall_seconds");
    expect(fieldOf({ ...minimal, method: TrainingMethod.SFT, sft: { maxWallSeconds: Number.NaN } })).toBe("sft.max_wall_seconds");
    expect(fieldOf({ ...minimal, inferenceEndpoints: ["no-port"] })).toBe("inference_endpoints[0]");
    expect(fieldOf({})).toBe("problems.path");
    expect(fieldOf({ problems: { path: "", limit: 3 } })).toBe("problems.path");
    expect(fieldOf({ ...minimal, importSamplesPath: "s.jsonl" })).toBe("problems");
    expect(fieldOf({ importSamplesPath: "s.jsonl", method: TrainingMethod.SFT })).toBe("import_samples_path");
    expect(fieldOf({ importSamplesPath: "s.jsonl", mode: RunMode.ONLINE })).toBe("mode");
    expect(fieldOf({ ...minimal, mode: 9 as RunMode })).toBe("mode");
    expect(fieldOf({ ...minimal, sampling: { adapter: 7 as SamplingAdapter } })).toBe("sampling.adapter");
  });

  it("refuses sampling from the latest pushed adapter offline, where nothing is pushed before sampling ends", () => {
    expect(() => resolveRunPlan(config({ ...minimal, sampling: { adapter: SamplingAdapter.LATEST_PUSHED } }), defaults)).toThrow(/^sampling\.adapter: SAMPLING_ADAPTER_LATEST_PUSHED needs mode RUN_MODE_ONLINE/);
    expect(resolveRunPlan(config({ ...minimal, sampling: { adapter: SamplingAdapter.BASE } }), defaults).samplingAdapter).toBe("base");
  });

  it("refuses sampling settings in the fields they left (1, 2, 3, 5), rather than dropping them", () => {
    // What a client built before the move sends: SamplingConfig.temperature = 0.5 as field 1 (fixed32).
    const old = new Uint8Array([0x0d, ...new Uint8Array(new Float32Array([0.5]).buffer)]);
    const sampling = fromBinary(SamplingConfigSchema, old);
    expect(sampling.$unknown?.map((field) => field.no)).toEqual([1]);
    expect(fieldOf({ ...minimal, sampling })).toBe("sampling");
  });

  it("sends 0 max_new_tokens as the reference's 128, not as the server's default", () => {
    expect(resolveRunPlan(config({ ...minimal, sampling: { params: { maxNewTokens: 0 } } }), defaults).sampler.maxNewTokens).toBe(128);
  });

  it("lets a config name only endpoints the operator listed, compared by host (any case) and port", () => {
    const named = (endpoints: string[], allowedEndpoints: string[] = []) =>
      resolveRunPlan(config({ ...minimal, inferenceEndpoints: endpoints }), { ...defaults, allowedEndpoints }).endpoints;
    expect(named(["127.0.0.1:50051"])).toEqual(["127.0.0.1:50051"]);
    expect(named(["Infer-B:7000", "127.0.0.1:50051"], ["infer-b:7000"])).toEqual(["Infer-B:7000", "127.0.0.1:50051"]);
    let refused: unknown;
    try {
      named(["127.0.0.1:50051", "attacker.example:50051"], ["infer-b:7000"]);
    } catch (err) {
      refused = err;
    }
    expect(refused).toMatchObject({ code: Status.PERMISSION_DENIED, field: "inference_endpoints[1]" });
    expect((refused as Error).message).toMatch(/"attacker\.example:50051" is not an endpoint this trainer may use/);
    // The same host on another port, or by DNS instead of directly, is another endpoint.
    expect(() => named(["127.0.0.1:50052"])).toThrow(/inference_endpoints\[0\]/);
    expect(() => named(["dns:///127.0.0.1:50051"])).toThrow(/inference_endpoints\[0\]/);
  });

  it("refuses a config with no endpoints when the trainer has none configured", () => {
    expect(() => resolveRunPlan(config(minimal), { endpoints: [] })).toThrow(/inference_endpoints: must name at least one/);
  });

  it("draws a seed only when none is set, and reports it", () => {
    expect(resolveRunPlan(config({ ...minimal, seed: 0 }), defaults).seed).toBe(0);
    const drawn = resolveRunPlan(config(minimal), { endpoints: ["h:1"] }).seed;
    expect(Number.isInteger(drawn) && drawn >= 0).toBe(true);
    expect(resolvedRunConfig(resolveRunPlan(config(minimal), defaults)).seed).toBe(99);
  });
});
