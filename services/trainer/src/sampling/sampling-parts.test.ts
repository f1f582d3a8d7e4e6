import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { FloatDtype } from "#core/gen/lightreasoner/v1/common_pb.ts";
import { TrajectoryStepSchema } from "#core/gen/lightreasoner/v1/inference_pb.ts";
import { Status } from "#core/grpc/errors.ts";
import { logSoftmax } from "#core/math/distribution.ts";
import { float32ArrayToFloat16 } from "#core/math/float16.ts";
import { SeededRandom } from "#core/math/random.ts";
import { selectStep } from "#core/math/selection.ts";
import { summarizeStep } from "#core/math/sparse-step.ts";
import { resolveSamplerConfig } from "./config.ts";
import { SamplerConfigError } from "./errors.ts";
import { problemSeed } from "./seeds.ts";
import { selectionOf } from "./step-selection.ts";
import { parseEndpointTarget, parseEndpointTargets } from "./targets.ts";

describe("per-problem seeds", () => {
  it("depend only on the run seed, the problem id and the attempt", () => {
    const a = problemSeed(7, "0123456789abcdef");
    expect(problemSeed(7, "0123456789abcdef")).toBe(a);
    expect(problemSeed(8, "0123456789abcdef")).not.toBe(a);
    expect(problemSeed(7, "0123456789abcdee")).not.toBe(a);
    expect(problemSeed(7, "0123456789abcdef", 1)).not.toBe(a);
    expect(Number.isInteger(a) && a >= 0 && a <= 0xffffffff).toBe(true);
  });
});

describe("endpoint addresses", () => {
  it("reads host:port, [v6]:port and dns:///name:port", () => {
    expect(parseEndpointTarget("127.0.0.1:50051")).toEqual({ text: "127.0.0.1:50051", kind: "direct", host: "127.0.0.1", port: 50051 });
    expect(parseEndpointTarget("[::1]:9")).toMatchObject({ kind: "direct", host: "::1", port: 9 });
    expect(parseEndpointTarget("dns:///inference.default.svc:50051")).toMatchObject({ kind: "dns", host: "inference.default.svc", port: 50051 });
  });

  it("names the field and the address that is wrong", () => {
    expect(() => parseEndpointTargets(["a:1", "inference"])).toThrow(/inference_endpoints\[1\]: "inference" must be "host:port" or "dns:\/\/\/host:port"/);
    expect(() => parseEndpointTargets(["a:70000"])).toThrow(/inference_endpoints\[0\]: "a:70000" has port 70000, outside 1-65535/);
    expect(() => parseEndpointTargets(["http://a:1"])).toThrow(/is not "host:port"/);
    expect(() => parseEndpointTargets(["a:1", "a:1"])).toThrow(/inference_endpoints\[1\]: "a:1" is listed twice/);
    expect(() => parseEndpointTargets([])).toThrow(/must name at least one inference endpoint/);
    try {
      parseEndpointTargets(["nope"]);
    } catch (err) {
      expect(err).toBeInstanceOf(SamplerConfigError);
      expect((err as SamplerConfigError).code).toBe(Status.INVALID_ARGUMENT);
    }
  });
});

describe("sampler settings", () => {
  it("takes the reference's defaults and refuses beta and alpha out of range, naming the field", () => {
    const config = resolveSamplerConfig({ seed: 1 });
    expect(config).toMatchObject({ beta: 0.4, alpha: 0.2, maxNewTokens: 128, systemPrompt: "Please reason step by step.", encoding: "sparse" });
    expect(() => resolveSamplerConfig({ seed: 1, beta: -0.1 })).toThrow(/^selection\.beta: must be a finite number >= 0, got -0\.1$/);
    expect(() => resolveSamplerConfig({ seed: 1, alpha: 0 })).toThrow(/^selection\.alpha: must be a number in \(0, 1\], got 0$/);
    expect(() => resolveSamplerConfig({ seed: 1, alpha: 1.5 })).toThrow(SamplerConfigError);
    expect(() => resolveSamplerConfig({ seed: -1 })).toThrow(/^seed: must be an integer in \[0, 4294967295\]/);
    expect(() => resolveSamplerConfig({ seed: 1, concurrency: 0 })).toThrow(/^sampling\.concurrency:/);
    expect(() => resolveSamplerConfig({ seed: 1, topP: 0 })).toThrow(/^sampling\.params\.top_p:/);
  });
});

/** Two random peaked distributions over a small vocabulary, as logSoftmax writes them. */
function pair(seed: number, vocab = 50): { expert: Float32Array; amateur: Float32Array } {
  const rng = new SeededRandom(seed);
  const logits = () => Float32Array.from({ length: vocab }, () => 3 * rng.normal());
  return { expert: logSoftmax(logits()), amateur: logSoftmax(logits()) };
}

const bytesOf = (values: Float32Array | Uint16Array) => new Uint8Array(values.buffer.slice(0));

describe("step decisions from the wire", () => {
  it("give bit-identical selections from SPARSE and FULL float32, equal to selectStep", () => {
    for (let seed = 1; seed <= 20; seed++) {
      const { expert, amateur } = pair(seed);
      const summary = summarizeStep(expert, amateur, { alpha: 0.2, topK: 3 });
      const sparse = create(TrajectoryStepSchema, {
        step: 0,
        scored: {
          distributions: {
            case: "sparse",
            value: {
              klDivergence: summary.kl,
              expertEntropy: summary.expertEntropy,
              plausibleTokenIds: Array.from(summary.plausibleIds),
              plausibleExpertLogProbs: Array.from(summary.plausibleLogpExpert),
              plausibleAmateurLogProbs: Array.from(summary.plausibleLogpAmateur),
              expertTop: { tokenIds: Array.from(summary.expertTop.ids), logProbs: Array.from(summary.expertTop.logp), omittedMass: summary.expertTop.restMass },
            },
          },
        },
      });
      const full = create(TrajectoryStepSchema, {
        step: 0,
        scored: { distributions: { case: "full", value: { dtype: FloatDtype.FLOAT32, expertLogProbs: bytesOf(expert), amateurLogProbs: bytesOf(amateur) } } },
      });
      const settings = { alpha: 0.2, beta: 1, vocabSize: 50 };
      const reference = selectStep({ logpExpert: expert, logpAmateur: amateur, alpha: 0.2, beta: 1 });
      expect(selectionOf(sparse, settings)).toEqual(reference);
      expect(selectionOf(full, settings)).toEqual(reference);
      // A larger alpha narrows a SPARSE summary exactly as FULL narrows the full distribution.
      const narrow = { alpha: 0.5, beta: 1, vocabSize: 50, requestedAlpha: 0.2 };
      expect(selectionOf(sparse, narrow)).toEqual(selectStep({ logpExpert: expert, logpAmateur: amateur, alpha: 0.5, beta: 1 }));
    }
  });

  it("decodes FULL float16 to the rounded values", () => {
    const { expert, amateur } = pair(3);
    const step = create(TrajectoryStepSchema, {
      scored: { distributions: { case: "full", value: { dtype: FloatDtype.FLOAT16, expertLogProbs: bytesOf(float32ArrayToFloat16(expert)), amateurLogProbs: bytesOf(float32ArrayToFloat16(amateur)) } } },
    });
    const decision = selectionOf(step, { alpha: 0.2, beta: 0.4, vocabSize: 50 });
    const exact = selectStep({ logpExpert: expert, logpAmateur: amateur, alpha: 0.2, beta: 0.4 });
    expect(decision.kl).toBeCloseTo(exact.kl, 2);
    expect(Array.from(decision.plausibleIds)).toEqual(Array.from(exact.plausibleIds));
  });

  it("reads FULL bytes that sit inside a shared Node Buffer pool (as the wire decoder hands them out)", () => {
    const { expert, amateur } = pair(5);
    const pooled = (values: Float32Array) => {
      const b = Buffer.from(bytesOf(values));
      expect(b.byteOffset > 0 || b.buffer.byteLength > b.length).toBe(true);
      return b;
    };
    const step = create(TrajectoryStepSchema, { scored: { distributions: { case: "full", value: { dtype: FloatDtype.FLOAT32, expertLogProbs: pooled(expert), amateurLogProbs: pooled(amateur) } } } });
    expect(selectionOf(step, { alpha: 0.2, beta: 0.4, vocabSize: 50 })).toEqual(selectStep({ logpExpert: expert, logpAmateur: amateur, alpha: 0.2, beta: 0.4 }));
  });

  it("refuses distributions of the wrong size or a step without any", () => {
    const { expert, amateur } = pair(4);
    const full = create(TrajectoryStepSchema, { step: 2, scored: { distributions: { case: "full", value: { dtype: FloatDtype.FLOAT32, expertLogProbs: bytesOf(expert), amateurLogProbs: bytesOf(amateur) } } } });
    expect(() => selectionOf(full, { alpha: 0.2, beta: 0.4, vocabSize: 64 })).toThrow(/step 2\.scored\.full\.expert_log_probs: holds 200 bytes, expected 256/);
    expect(() => selectionOf(create(TrajectoryStepSchema, { step: 1 }), { alpha: 0.2, beta: 0.4, vocabSize: 64 })).toThrow(/step 1\.scored\.distributions: is missing/);
    const badSparse = create(TrajectoryStepSchema, { scored: { distributions: { case: "sparse", value: { klDivergence: 1, plausibleTokenIds: [99], plausibleExpertLogProbs: [-0.1], plausibleAmateurLogProbs: [-1] } } } });
    expect(() => selectionOf(badSparse, { alpha: 0.2, beta: 0.4, vocabSize: 64 })).toThrow(/plausibleIds: entry 0 = 99 is outside the vocabulary/);
  });
});
