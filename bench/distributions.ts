// Next-token distributions shaped like a trained LM's at a real vocabulary size, for the parts
// of the benchmark that need one step's numbers without running a model (the step summary,
// the transport): a noisy floor and a few strong candidates, so the alpha-plausible set holds
// a handful of tokens as it does in sampling, and an amateur that disagrees in part.
import type { LogProbs } from "#core/math/distribution.ts";
import { logSoftmax } from "#core/math/distribution.ts";
import { SeededRandom } from "#core/math/random.ts";

export interface StepDistributions {
  logpExpert: LogProbs;
  logpAmateur: LogProbs;
}

export function syntheticStep(vocabSize: number, seed: number): StepDistributions {
  const rng = new SeededRandom(seed);
  const floor = () => Float32Array.from({ length: vocabSize }, () => rng.normal() * 2);
  const expert = floor();
  const amateur = floor();
  for (let j = 0; j < 4; j++) {
    const id = rng.int(vocabSize);
    expert[id] += 14 + rng.next() * 4;
    amateur[id] += 8 + rng.next() * 8;
  }
  return { logpExpert: logSoftmax(expert), logpAmateur: logSoftmax(amateur) };
}
