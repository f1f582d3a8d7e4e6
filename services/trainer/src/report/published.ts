// The paper's own figures, as METHOD.md ("Published results (anchors)") states them, so a
// report can put them beside what this machine measured: the scale and direction of the
// published effect next to ours. Only figures written there; none is computed or estimated.
import type { PublishedAnchors } from "./run-report.ts";

export const PUBLISHED_ANCHORS: PublishedAnchors = {
  source: "LightReasoner (arXiv 2510.07962), reference README \"Main Results\": zero-shot pass@1 on GSM8K, trained on GSM8K only; efficiency against rejection-sampling SFT on Qwen2.5-Math-1.5B",
  gsm8k: [
    { expert: "Qwen2.5-Math-1.5B", base: 42.5, sft: 69.2, lightreasoner: 70.6 },
    { expert: "Qwen2.5-Math-7B", base: 57.5, sft: 64.4, lightreasoner: 67.9 },
    { expert: "DeepSeek-R1-Distill-Qwen-1.5B", base: 75.2, sft: 78.2, lightreasoner: 79.5 },
  ],
  efficiency: [
    { expert: "Qwen2.5-Math-1.5B", measure: "total time", sft: "4 h", lightreasoner: "0.5 h" },
    { expert: "Qwen2.5-Math-1.5B", measure: "problems sampled", sft: "3,952", lightreasoner: "1,000" },
    { expert: "Qwen2.5-Math-1.5B", measure: "tuned tokens", sft: "1.77M", lightreasoner: "20K" },
  ],
};
