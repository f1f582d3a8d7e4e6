// `lightreasoner bench`: the benchmark (sampling, the machine's limit, transport, training,
// memory), printed as tables and written to bench.json; and `bench-worker`, the hidden
// subcommand the benchmark runs its helper processes with.
import type { Command } from "commander";
import { runBench } from "#bench/run-bench.ts";
import { SECTIONS } from "#bench/settings.ts";
import { renderReport } from "#bench/table.ts";
import { runBenchWorker } from "#bench/worker.ts";

interface BenchFlags {
  quick?: boolean;
  out: string;
  only?: string[];
  cacheDir?: string;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

export function registerBench(program: Command): void {
  program
    .command("bench")
    .description("measure sampling, transport and training speed against the naive way and this machine's limit; print tables and write bench.json")
    .option("--quick", "fewer cells, tokens and repeats (under 2 minutes on 2 cores); for a smoke test, not for the README")
    .option("--out <file>", "where to write the JSON report", "bench.json")
    .option("--only <sections>", `run only these sections, comma-separated or repeated (${SECTIONS.join(", ")})`, collect)
    .option("--cache-dir <dir>", "where generated models and data are kept between runs (default .cache/bench in the repository)")
    .action(async (flags: BenchFlags) => {
      const started = performance.now();
      const report = await runBench({
        quick: flags.quick === true,
        out: flags.out,
        only: flags.only,
        cacheDir: flags.cacheDir,
        log: (line) => console.error(`[${((performance.now() - started) / 1000).toFixed(0).padStart(4)} s] ${line}`),
      });
      console.log(renderReport(report));
      console.log(`\nwrote ${flags.out}`);
    });
  program
    .command("bench-worker <task> <json>", { hidden: true })
    .description("a helper process of `lightreasoner bench` (transport-peer, lora, pretrain)")
    .action(async (task: string, json: string) => {
      await runBenchWorker(task, json);
      // A server task ends on SIGTERM; one-shot tasks must not linger on open handles (tfjs, gRPC).
      process.exit(0);
    });
}
