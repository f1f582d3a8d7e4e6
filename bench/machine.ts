// What the benchmark ran on, recorded beside the figures: CPU, cores, memory, the runtimes'
// versions and how busy the machine was when the run started and ended (a load average above
// the core count means the figures were shared with something else), and on a virtual machine
// how much CPU time the host took away meanwhile.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { cpus, loadavg, totalmem } from "node:os";
import { recommendedNodeFlagsIn } from "#inference/model/process-settings.ts";

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  /** CPU feature flags that decide matrix-multiply speed (from /proc/cpuinfo, Linux only). */
  vectorFeatures: string[];
  memoryGiB: number;
  platform: string;
  node: string;
  onnxruntimeNode: string;
  tfjs: string;
  /** GLIBC_TUNABLES the run started with (null: glibc's defaults); see process-settings.ts. */
  glibcTunables: string | null;
  /** The recommended Node flags the run started with (process-settings.ts; its services get the same); absent from reports older than the field. */
  nodeFlags?: string[];
  /** 1-minute load average when the run started. */
  loadAverageAtStart: number;
  loadAverageAtEnd?: number;
  /** The machine's CPU time counters when the run started (/proc/stat; null elsewhere). */
  cpuTimesAtStart: CpuTimes | null;
  /**
   * Of all CPU time during the run (idle included), the share the hypervisor gave to other
   * guests while this one wanted to run ("steal"): a virtual machine's figures are slowed by
   * it without any load of its own showing. Idle time in the total makes it smaller than
   * what a busy vCPU lost.
   */
  stolenShare?: number | null;
}

/** The first "cpu" line of /proc/stat, in clock ticks: all time, and the time stolen. */
export interface CpuTimes {
  total: number;
  steal: number;
}

/** The machine's CPU time counters now; null where /proc/stat is absent (not Linux). */
export function cpuTimes(): CpuTimes | null {
  try {
    const fields = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal [guest guest_nice, already counted in user and nice]
    return { total: fields.slice(0, 8).reduce((a, b) => a + b, 0), steal: fields[7] ?? 0 };
  } catch {
    return null;
  }
}

/** The stolen share of CPU time between two readings; null without both or without time between. */
export function stolenShare(from: CpuTimes | null, to: CpuTimes | null): number | null {
  if (!from || !to || to.total <= from.total) return null;
  return (to.steal - from.steal) / (to.total - from.total);
}

const require = createRequire(import.meta.url);

function packageVersion(name: string): string {
  try {
    return (require(`${name}/package.json`) as { version: string }).version;
  } catch {
    return "unknown";
  }
}

/** The CPU's "model name" from /proc/cpuinfo, else what Node reports (other platforms). */
export function cpuModelName(): string {
  try {
    const name = /^model name\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1].trim();
    if (name) return name;
  } catch {
    // not Linux: fall through to Node's view
  }
  return cpus()[0]?.model.trim() ?? "unknown";
}

function vectorFeatures(): string[] {
  try {
    const flags = /^flags\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1].split(/\s+/) ?? [];
    return ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile"].filter((f) => flags.includes(f));
  } catch {
    return [];
  }
}

export function describeMachine(): MachineInfo {
  const list = cpus();
  return {
    cpuModel: cpuModelName(),
    cores: list.length,
    vectorFeatures: vectorFeatures(),
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    platform: `${process.platform} ${process.arch}`,
    node: process.version,
    onnxruntimeNode: packageVersion("onnxruntime-node"),
    tfjs: packageVersion("@tensorflow/tfjs"),
    glibcTunables: process.env.GLIBC_TUNABLES ?? null,
    nodeFlags: recommendedNodeFlagsIn(),
    loadAverageAtStart: loadavg()[0],
    cpuTimesAtStart: cpuTimes(),
  };
}

/** The current 1-minute load average. */
export const currentLoad = () => loadavg()[0];
