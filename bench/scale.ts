// Section "scale": LoRA training at the Qwen2.5-0.5B shape, the trainer's side of real size.
// scripts/lora-scale.mjs runs in a process of its own, so the peak resident memory it reports
// is the training engine's alone and not this bench's: one micro-batch's LoRA gradients
// against an independent float64 PyTorch computation, then the engine's training step
// (loss, gradients, AdamW) timed beside the same step in PyTorch float32 (bench/lora-scale.ts).
import { execFile } from "node:child_process";
import { join } from "node:path";
import type { LoraScaleResult } from "./lora-scale.ts";
import { preparePair, QWEN05_PAIR } from "./models.ts";
import { REPO_ROOT } from "./paths.ts";
import { findPython, PEER_INSTALL_HINT } from "./python-peers.ts";
import type { BenchSettings } from "./settings.ts";

export type ScaleResult = ({ measured: true } & LoraScaleResult) | { measured: false; reason: string };

const SCRIPT = join(REPO_ROOT, "scripts", "lora-scale.mjs");

export async function runScale(settings: BenchSettings, log: (line: string) => void): Promise<ScaleResult> {
  const python = await findPython();
  if (!python?.has.torch) return { measured: false, reason: `PyTorch is not installed (${PEER_INSTALL_HINT})` };
  const pair = await preparePair(QWEN05_PAIR, settings.cacheDir, log);
  const { rows, seq, labels, steps } = settings.scale;
  const args = ["--expose-gc", SCRIPT, "--expert", pair.expert.dir, "--rows", String(rows), "--seq", String(seq), "--labels", String(labels), "--steps", String(steps), "--python", python.interpreter];
  const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, args, { cwd: REPO_ROOT, maxBuffer: 64 << 20, encoding: "utf8" }, (err, out, errOut) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : -1) : 0, stdout: out, stderr: errOut });
    });
  });
  const lines = stdout.trim().split("\n");
  for (const line of lines.slice(0, -1)) log(`  ${line}`);
  // Exit 1 with a result means the gradients missed the tolerance: the figure stands, marked FAIL.
  const last = lines.at(-1) ?? "";
  if (!last.startsWith("{")) throw new Error(`scripts/lora-scale.mjs exited ${code} without a result; stderr: ${stderr.slice(-2000)}`);
  return { measured: true, ...(JSON.parse(last) as LoraScaleResult) };
}
