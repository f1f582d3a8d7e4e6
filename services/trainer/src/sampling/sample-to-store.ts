// Stage 1 as one call, the way `lightreasoner sample`, the trainer service and the tests run
// it: check the endpoints, validate the settings against them, open (or resume) the sample
// store under those settings, sample every problem not yet stored, and close everything.
import type { Problem } from "#core/tasks/problems.ts";
import { SampleStore } from "#trainer/store/sample-store.ts";
import { resolveSamplerConfig, storeSettings } from "./config.ts";
import type { SamplerConfig } from "./config.ts";
import { EndpointPool } from "./endpoint-pool.ts";
import type { EndpointPoolOptions } from "./endpoint-pool.ts";
import { sampleProblems } from "./sampler.ts";
import type { SamplingEvent, SamplingSummary } from "./sampler.ts";

export interface SampleToStoreOptions {
  /** Endpoints and the trainer's expert (see EndpointPoolOptions). */
  endpoints: EndpointPoolOptions;
  problems: readonly Problem[];
  storePath: string;
  config: Partial<SamplerConfig> & { seed: number };
  onEvent?: (event: SamplingEvent) => void;
  signal?: AbortSignal;
}

export interface SampleToStoreResult extends SamplingSummary {
  config: SamplerConfig;
  /** Bytes of a torn last line cut when the store was reopened (0 when it ended cleanly). */
  recoveredBytes: number;
}

export async function sampleToStore(options: SampleToStoreOptions): Promise<SampleToStoreResult> {
  const pool = await EndpointPool.connect(options.endpoints);
  try {
    const config = resolveSamplerConfig(options.config, pool.served);
    const store = SampleStore.open(options.storePath, { settings: storeSettings(config, pool.served.expertFingerprint, pool.served.amateurFingerprint) });
    try {
      const summary = await sampleProblems({ pool, store, problems: options.problems, config, onEvent: options.onEvent, signal: options.signal });
      return { ...summary, config, recoveredBytes: store.recovery.truncatedBytes };
    } finally {
      store.close();
    }
  } finally {
    pool.close();
  }
}
