// How Score walks a sequence: the model steps it runs, each over a slice of the tokens after
// the cache the earlier steps left, so what one call holds is bounded whatever its length.

/**
 * Most positions one Score step reports distributions for: a step's log-probabilities are
 * [positions, vocab] per model, held about three times over (ONNX Runtime's logits and output,
 * the binding's copy), so 64 rows cost what a 64-stream decode step does (39 MB a copy at
 * vocabulary 151,936). A 2,048-token sequence in one forward took the 0.5B-shaped pair's
 * service from 2,657 to 11,142 MiB and held its event loop 49.6 s (bench/score-footprint.ts);
 * in steps, 3,127 MiB and 1.3 s, and 5,120 tokens are accepted by default.
 */
export const SCORE_POSITIONS_PER_STEP = 64;

/** One step: tokens [from, from + length), and whether it reports positions from + 1 .. from + length. */
export interface ScoreStep {
  from: number;
  length: number;
  reports: boolean;
}

/**
 * The steps over `n` tokens that report positions `first` .. n: before `first`, at most
 * `budget` tokens a step (the prefill budget) with the head at the last position only; from
 * there, at most SCORE_POSITIONS_PER_STEP (or `budget`, if smaller) reported positions a step.
 * `inSteps` false (graphs that cannot take tokens after a cache): one step over everything.
 */
export function scoreSteps(n: number, first: number, budget: number, inSteps: boolean): ScoreStep[] {
  if (!inSteps) return [{ from: 0, length: n, reports: true }];
  const steps: ScoreStep[] = [];
  for (let from = 0; from < n; ) {
    // Tokens that can still be read without reporting: the step ends before position `first`.
    const unreported = first - 1 - from;
    const reports = unreported <= 0;
    const length = reports ? Math.min(SCORE_POSITIONS_PER_STEP, budget, n - from) : Math.min(budget, unreported);
    steps.push({ from, length, reports });
    from += length;
  }
  return steps;
}
