// What the kernel says about a process's memory: its peak resident set (VmHWM in
// /proc/<pid>/status), which `lightreasoner run` and the benchmark report, beside the resident
// set now. A process's own VmHWM, not getrusage's maxRSS: Linux starts a child's maxRSS at
// what its parent held when it forked.
import { readFileSync } from "node:fs";

export class ProcessMemoryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProcessMemoryError";
  }
}

export interface ProcessMemory {
  /** Peak resident set since the process started (VmHWM), in bytes. */
  peakRssBytes: number;
  /** Resident set now (VmRSS), in bytes. */
  rssBytes: number;
  /**
   * Of it, pages mapped from files (RssFile): chiefly the weights ONNX Runtime reads from the
   * mapped safetensors file as they are used (the embedding's rows, one per token id seen).
   * Clean pages of the page cache, which the kernel may drop; they grow with the distinct
   * tokens served, up to the file's size, not with the streams.
   */
  fileRssBytes: number;
}

/** VmHWM, VmRSS and RssFile of a running process (Linux /proc); throws ProcessMemoryError when they cannot be read. */
export function processMemory(pid: number): ProcessMemory {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch (err) {
    throw new ProcessMemoryError(`/proc/${pid}/status: cannot read the process's memory (${(err as Error).message}); the memory figures need Linux`);
  }
  const kib = (field: string) => {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status);
    if (!match) throw new ProcessMemoryError(`/proc/${pid}/status: no ${field} line`);
    return Number(match[1]) * 1024;
  };
  return { peakRssBytes: kib("VmHWM"), rssBytes: kib("VmRSS"), fileRssBytes: kib("RssFile") };
}
