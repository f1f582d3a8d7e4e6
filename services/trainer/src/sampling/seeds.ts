// Per-problem sampler seeds. Each trajectory's seed is a hash of the run seed, the problem id
// and the attempt number, never a counter: a problem gets the same seed whichever endpoint
// writes it, in whatever order, before or after a restart, so one run seed fixes the sample set.
import { createHash } from "node:crypto";

/** A uint32 seed for `problemId`'s `attempt`-th trajectory (0 for the first) in a run seeded `runSeed`. */
export function problemSeed(runSeed: number, problemId: string, attempt = 0): number {
  const digest = createHash("sha256").update(`lightreasoner-sampling-seed-v1\n${runSeed >>> 0}\n${problemId}\n${attempt}`, "utf8").digest();
  return digest.readUInt32LE(0);
}
