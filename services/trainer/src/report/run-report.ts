// What a LightReasoner round reports: the numbers a reader compares (accuracy before and
// after, LightReasoner beside the SFT baseline, samples and tuned tokens, time per stage)
// and the material the HTML report draws (KL values, example trajectories, loss curves).
// report.json is this object as is; report.html is drawn from it and nothing else
// (write-report.ts writes both; report-html.ts draws the page).
export interface AccuracyWithInterval {
  /** Fraction correct in [0, 1]. */
  accuracy: number;
  /** 95% Wilson interval of the accuracy. */
  ci95: [number, number];
}

export interface TrajectoryToken {
  text: string;
  kl: number;
  selected: boolean;
}

export interface ExampleTrajectory {
  question: string;
  correct: boolean | null;
  tokens: TrajectoryToken[];
}

export interface LossPoint {
  step: number;
  loss: number;
}

export interface MethodResult {
  accuracyAfter: number;
  accuracyAfterCi95: [number, number];
  /** Paired 95% interval of (after - before) on the same evaluation problems. */
  accuracyDeltaCi95: [number, number];
  problemsSampled: number;
  /** Token positions that carried a loss over the whole training, repeats over epochs included (the paper's comparison). */
  tunedTokens: number;
  /** Distinct token positions trained on: each selected step, or each token of a kept trajectory, counted once. */
  distinctTunedTokens: number;
  optimizerSteps: number;
  /** Sampling + training wall time, the cost the paper compares. */
  wallSeconds: number;
  /** The change in accuracy per 1,000 tuned tokens, in points: (after - before) x 100 / tunedTokens x 1,000. */
  gainPer1000TunedTokens: number;
  stageSeconds: Record<string, number>;
  loss: LossPoint[];
}

export interface RunReport {
  createdAt: string;
  expert: {
    name: string;
    fingerprint: string;
    accuracyBefore: number;
    accuracyBeforeCi95: [number, number];
    /** After LightReasoner training. */
    accuracyAfter: number;
    accuracyAfterCi95: [number, number];
    accuracyDeltaCi95: [number, number];
  };
  amateur: { name: string; accuracy: number; accuracyCi95: [number, number] };
  evalProblems: number;
  lightreasoner: MethodResult & {
    stepsSeen: number;
    stepsSelected: number;
    adapterVersions: string[];
  };
  sft: MethodResult & { trajectoriesKept: number } | null;
  /** SFT baselines stopped at LightReasoner's tuned tokens and at its wall time (lightreasoner run --sft-matched), where they ran. */
  sftMatched?: { tokens: MatchedSftResult | null; time: MatchedSftResult | null };
  /**
   * LightReasoner for more than one round (lightreasoner run --rounds), where it ran: round 1
   * is the run above; each later one sampled with the previous round's adapter, selected
   * again and trained on from it.
   */
  rounds?: RoundResult[];
  /** The paper's own figures (METHOD.md, "Published results"), shown beside ours for scale and direction; never measured here. */
  published?: PublishedAnchors;
  settings: Record<string, number | string | boolean>;
  tfjsBackend: string;
  /** What computed the LoRA gradients: "onnxruntime" or "tfjs" (on tfjsBackend); "" where the trainer did not say. */
  trainingEngine: string;
  /** Peak resident memory of each service process over the whole run, in bytes (null where the OS does not say). */
  servicePeakRssBytes?: Record<string, number | null>;
  /** KL of every step seen, for the distribution plot (capped by the writer). */
  klValues: number[];
  examples: ExampleTrajectory[];
}

/** What trained the adapter, for people: "ONNX Runtime (adapter and optimizer on TensorFlow.js wasm)" or "TensorFlow.js node". */
export function trainingEngineText(r: Pick<RunReport, "trainingEngine" | "tfjsBackend">): string {
  return r.trainingEngine === "onnxruntime" ? `ONNX Runtime (adapter and optimizer on TensorFlow.js ${r.tfjsBackend})` : `TensorFlow.js ${r.tfjsBackend}`;
}

/** An SFT baseline stopped at LightReasoner's budget, and how LightReasoner compares with it on the same problems. */
export interface MatchedSftResult extends MethodResult {
  trajectoriesKept: number;
  /** The budget it was stopped at: LightReasoner's tuned tokens, or its sampling + training seconds. */
  budget: { tunedTokens: number } | { wallSeconds: number };
  /** Paired 95% interval of LightReasoner's accuracy after minus this baseline's, on the same evaluation problems. */
  lightreasonerMinusThisCi95: [number, number];
}

/** The published anchor figures: zero-shot pass@1 per expert, and the efficiency comparison with SFT. */
export interface PublishedAnchors {
  source: string;
  /** Accuracy in percent: base expert, after SFT, after LightReasoner. */
  gsm8k: { expert: string; base: number; sft: number; lightreasoner: number }[];
  efficiency: { expert: string; measure: string; sft: string; lightreasoner: string }[];
}

/**
 * One round of LightReasoner, measured on the same evaluation problems as every other result;
 * accuracyDeltaCi95 is against the base expert before any round, tunedTokens and wallSeconds
 * are this round's own.
 */
export interface RoundResult extends Pick<MethodResult, "accuracyAfter" | "accuracyAfterCi95" | "accuracyDeltaCi95" | "tunedTokens" | "wallSeconds"> {
  /** 1 for the first round. */
  round: number;
  /** Paired 95% interval of (after this round - after the round before it). */
  changeFromPreviousCi95: [number, number];
  stepsSeen: number;
  stepsSelected: number;
  /** Every round's tuned tokens up to this one. */
  cumulativeTunedTokens: number;
}
