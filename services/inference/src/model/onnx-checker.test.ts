// The exported graph checked by tools that share no code with this project: the `onnx`
// Python package's checker (with full shape inference), and, where installed, the Python
// ONNX Runtime, which must load the file with no custom code and agree on the distribution:
// both its log_probs and its logits (the output tools outside this project read) give our
// log-probabilities.
// Skips where no python3 has an `onnx` new enough to know opset 23 (onnx >= 1.18; Debian
// bookworm's python3-onnx is 1.12).
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { writeModelDir } from "#core/formats/model-dir.ts";
import { exportOnnx } from "./export.ts";
import { OPSET_VERSION } from "./onnx-graph.ts";
import { CausalLmSession } from "./session.ts";
import { randomWeights, tinyConfig, tinyConfigJson } from "./testing/random-model.ts";
import { maxAbsDiff } from "./testing/compare.ts";

function python(executable: string, script: string, args: string[] = []): { ok: boolean; stdout: string; stderr: string } {
  const r = spawnSync(executable, ["-c", script, ...args], { encoding: "utf8", timeout: 60_000 });
  return { ok: r.status === 0, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

/** The first python3 whose onnx knows our opset, and whether it also has onnxruntime. */
function findPython(): { exe: string; hasOrt: boolean } | null {
  for (const exe of ["python3", "/usr/bin/python3"]) {
    const r = python(exe, "import onnx; print(onnx.defs.onnx_opset_version())");
    if (r.ok && Number(r.stdout.trim()) >= OPSET_VERSION) return { exe, hasOrt: python(exe, "import onnxruntime").ok };
  }
  return null;
}

const py = findPython();

const CHECK = `
import sys, onnx
onnx.checker.check_model(sys.argv[1], full_check=True)
print("ok")
`;

const RUN = `
import sys, json, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
tokens = json.loads(sys.argv[2])
n = len(tokens)
feeds = {"input_ids": np.array([tokens], dtype=np.int64), "attention_mask": np.ones((1, n), dtype=np.int64),
         "position_ids": np.arange(n, dtype=np.int64)[None]}
for i in s.get_inputs():
    if i.name.startswith("past_key_values."):
        feeds[i.name] = np.zeros((1, i.shape[1], 0, i.shape[3]), dtype=np.float32)
    if i.name == "num_logits_to_keep":
        feeds[i.name] = np.array(0, dtype=np.int64)
logits, log_probs = s.run(["logits", "log_probs"], feeds)
shifted = logits.astype(np.float64) - logits.max(-1, keepdims=True)
from_logits = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
print(json.dumps({"fromLogits": from_logits.reshape(-1).tolist(), "logProbs": log_probs.reshape(-1).tolist()}))
`;

describe.skipIf(py === null)(`exported graph in independent ONNX tooling (needs python3 with onnx >= 1.18)`, () => {
  const configJson = tinyConfigJson("qwen2", { head_dim: 12 });
  const config = tinyConfig("qwen2", { head_dim: 12 });
  const root = mkdtempSync(join(tmpdir(), "lr-onnx-check-"));
  const modelDir = join(root, "model");
  writeModelDir(modelDir, { configJson, weights: randomWeights(config, 3) });

  for (const external of [false, true]) {
    const label = external ? "with external data" : "with inline weights";
    it(`passes onnx.checker.check_model(full_check=True) ${label}`, async () => {
      const { onnxPath } = await exportOnnx({ modelDir, outPath: join(root, label.replace(/ /g, "-"), "model.onnx"), externalDataThreshold: external ? 0 : undefined });
      const r = python(py!.exe, CHECK, [onnxPath]);
      expect(r.stderr).toBe("");
      expect(r.stdout.trim()).toBe("ok");
    });
  }

  it.skipIf(!py?.hasOrt)("runs in the Python ONNX Runtime with the same log-probabilities, from log_probs and from logits", async () => {
    const { onnxPath } = await exportOnnx({ modelDir, outPath: join(root, "py-ort", "model.onnx"), externalDataThreshold: 0 });
    const tokens = [1, 5, 9, 33, 60];
    const r = python(py!.exe, RUN, [onnxPath, JSON.stringify(tokens)]);
    expect(r.ok, r.stderr).toBe(true);
    const theirs = JSON.parse(r.stdout) as { fromLogits: number[]; logProbs: number[] };
    const session = await CausalLmSession.open(onnxPath, { executionProvider: "cpu" });
    const [ours] = await session.step([{ cache: session.newCache(), tokens, allPositions: true }]);
    await session.release();
    expect(maxAbsDiff(ours.positionLogProbs!, theirs.logProbs)).toBeLessThan(1e-5);
    expect(maxAbsDiff(ours.positionLogProbs!, theirs.fromLogits)).toBeLessThan(1e-5);
  });

  it("the checker rejects a broken graph (the check can fail)", () => {
    const broken = join(root, "broken.onnx");
    writeFileSync(broken, Buffer.from([0x08, 0x0b, 0x3a, 0x04, 0x12, 0x02, 0x0a, 0x00]));
    expect(python(py!.exe, CHECK, [broken]).ok).toBe(false);
  });
});
