import { Command, type CommanderError } from "commander";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { loadModelDir } from "#core/formats/model-dir.ts";
import { buildWorldData } from "#world/build-data.ts";
import { writeWorldTokenizer } from "#world/tokenizer.ts";
import { registerPretrain } from "./pretrain.ts";

const scratch = mkdtempSync(join(tmpdir(), "cli-pretrain-"));
const tokenizer = join(scratch, "tokenizer");
const data = join(scratch, "world", "train.jsonl");
const config = join(scratch, "config.json");

beforeAll(() => {
  writeWorldTokenizer(tokenizer);
  buildWorldData({ outDir: join(scratch, "world"), trainCount: 12, testCount: 1, seed: 2 });
  writeFileSync(config, JSON.stringify({ model_type: "llama", vocab_size: 105, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, tie_word_embeddings: true }));
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Runs `lightreasoner pretrain ...args` in process; returns what it printed. */
async function cli(args: string[]): Promise<string> {
  const lines: string[] = [];
  const spy = vi.spyOn(console, "log").mockImplementation((...parts: unknown[]) => void lines.push(parts.join(" ")));
  const program = new Command().exitOverride().configureOutput({ writeOut: (s) => void lines.push(s), writeErr: (s) => void lines.push(s) });
  registerPretrain(program);
  try {
    await program.parseAsync(["node", "lightreasoner", "pretrain", ...args]);
  } catch (err) {
    if ((err as CommanderError).code !== "commander.helpDisplayed") throw err;
  } finally {
    spy.mockRestore();
  }
  return lines.join("\n");
}

describe("lightreasoner pretrain", () => {
  it("runs in pieces that continue where the last stopped, then writes the finished model", async () => {
    const out = join(scratch, "model");
    const common = ["--config", config, "--data", data, "--tokenizer", tokenizer, "--out", out, "--steps", "4", "--batch-size", "4", "--warmup", "1", "--lr", "0.01", "--checkpoint-every", "2", "--log-every", "1"];
    const first = await cli([...common, "--stop-after", "3"]);
    expect(first).toMatch(/12 sequences, \d+ tokens/);
    expect(first).toMatch(/tfjs backend \w+/);
    expect(first).toMatch(/step 3\/4 {2}loss \d+\.\d{4} {2}lr .* tok\/s/);
    expect(first).toMatch(/paused at step 3\/4 \(step-limit\); .* Run the same command to continue/);
    const second = await cli(common);
    expect(second).toMatch(/resumed at step 3/);
    expect(second).toMatch(/step 4\/4/);
    expect(second).not.toMatch(/step 3\/4/);
    expect(second).toMatch(/finished: 4 steps/);
    expect(loadModelDir(out).config.numLayers).toBe(2);
    expect(JSON.parse(readFileSync(join(out, "pretrain_log.json"), "utf8")).lossHistory.length).toBe(4);
    expect(existsSync(join(out, "checkpoints"))).toBe(false);
    expect(await cli(common)).toMatch(/already holds this finished run \(4 steps\); nothing to do/);
  });

  it("explains every flag in --help", async () => {
    const text = await cli(["--help"]);
    for (const flag of ["--config", "--from", "--data", "--tokenizer", "--out", "--steps", "--stop-after", "--max-minutes", "--batch-size", "--seq-len", "--lr", "--seed", "--completion-only", "--schedule"]) {
      expect(text).toContain(flag);
    }
    expect(text).toMatch(/the same\s+command\s+continues\s+it/);
  });

  it("rejects bad flags clearly", async () => {
    await expect(cli(["--data", data, "--tokenizer", tokenizer, "--out", join(scratch, "x")])).rejects.toThrow(/give exactly one: --config for a fresh model, --from/);
    await expect(cli(["--config", config, "--data", data, "--tokenizer", tokenizer, "--out", join(scratch, "x"), "--steps", "0"])).rejects.toThrow(/--steps must be > 0/);
    await expect(cli(["--config", config, "--data", data, "--tokenizer", tokenizer, "--out", join(scratch, "x"), "--batch-size", "0"])).rejects.toThrow(/pretrain\.batchSize: Too small/);
    await expect(cli(["--config", join(scratch, "missing.json"), "--data", data, "--tokenizer", tokenizer, "--out", join(scratch, "x")])).rejects.toThrow(/missing\.json: cannot read the model config/);
  });
});
