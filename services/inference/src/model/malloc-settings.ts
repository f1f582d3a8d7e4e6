// glibc's malloc serves each allocation above its mmap threshold (which adapts, to at most 32
// MiB) with fresh pages from the kernel and unmaps them on free. A decode step's log-probability
// output at batch 64 and vocabulary 151,936 is 39 MB, and onnxruntime-node copies every output
// into a new JavaScript buffer: each step faulted ~9,500 fresh pages in, per model. With these
// tunables such buffers come from the heap and are reused (bench/output-copy.ts measures one
// output's trip both ways). glibc reads them only when a process starts, so they are set where
// the service is started (the inference image, `npm run bench`), not here.
export const RECOMMENDED_GLIBC_TUNABLES = "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=2147483648";

/** Whether this process started with a raised mmap threshold (glibc on Linux only). */
export function largeBuffersReused(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.GLIBC_TUNABLES?.includes("glibc.malloc.mmap_threshold=") ?? false;
}
