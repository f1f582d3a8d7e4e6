// Settings a process reads only when it starts, so they are set where the inference service is
// started (its image; `npm run bench` and `npm start`, whose child services inherit them), not
// here; the service logs the recommended ones it was started without.

// glibc's malloc serves each allocation above its mmap threshold (which adapts, to at most 32
// MiB) with fresh pages from the kernel and unmaps them on free. A decode step's log-probability
// output at batch 64 and vocabulary 151,936 is 39 MB, and onnxruntime-node copies every output
// into a new JavaScript buffer: each step faulted ~9,500 fresh pages in, per model. With these
// tunables such buffers come from the heap and are reused (bench/output-copy.ts measures one
// output's trip both ways).
export const RECOMMENDED_GLIBC_TUNABLES = "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=2147483648";

/** Whether this process started with a raised mmap threshold (glibc on Linux only). */
export function largeBuffersReused(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.GLIBC_TUNABLES?.includes("glibc.malloc.mmap_threshold=") ?? false;
}

// Those fresh output buffers set off a garbage collection every few model steps, and V8 marks
// and sweeps on helper threads beside the main one. ONNX Runtime's thread pool already keeps
// every core busy during a step, so on a machine with few cores the helpers take turns with
// it and a step's parallel loops wait for whichever thread was preempted. With one GC thread
// the collection runs on the main thread, between steps (the README's "One GC thread" gives
// the figures). Node accepts this flag on its command line only (not in NODE_OPTIONS, and
// v8.setFlagsFromString aborts the process once V8 has started).
export const RECOMMENDED_NODE_FLAGS: readonly string[] = ["--single-threaded-gc"];

/** The recommended Node flags this process was started with. */
export function recommendedNodeFlagsIn(execArgv: readonly string[] = process.execArgv): string[] {
  return RECOMMENDED_NODE_FLAGS.filter((flag) => execArgv.includes(flag));
}

/** A start-up setting this process lacks: what to start it with, and why (for the service's log). */
export interface MissingSetting {
  recommended: string;
  why: string;
}

/** The recommended start-up settings this process was started without (the glibc ones on Linux only). */
export function missingProcessSettings(platform: NodeJS.Platform = process.platform, env: NodeJS.ProcessEnv = process.env, execArgv: readonly string[] = process.execArgv): MissingSetting[] {
  const missing: MissingSetting[] = [];
  if (platform === "linux" && !largeBuffersReused(env)) {
    missing.push({
      recommended: `GLIBC_TUNABLES=${RECOMMENDED_GLIBC_TUNABLES}`,
      why: "glibc gives fresh pages to every buffer above 32 MiB: start the service with the recommended GLIBC_TUNABLES so that each step's large outputs reuse memory (a [64, 151,936] output's trip out of ONNX Runtime 1.63x faster where it was measured; see the README)",
    });
  }
  const flags = recommendedNodeFlagsIn(execArgv);
  const missingFlags = RECOMMENDED_NODE_FLAGS.filter((flag) => !flags.includes(flag));
  if (missingFlags.length > 0) {
    missing.push({
      recommended: `node ${missingFlags.join(" ")} bin/lightreasoner.mjs ...`,
      why: "V8's garbage collector helper threads take turns with ONNX Runtime's on the cores: start node with the recommended flags (as the inference image does) so that collections run between model steps (see the README's \"One GC thread\")",
    });
  }
  return missing;
}
