// The expert and the amateur, opened together and refused together when they cannot be
// compared token for token: the method needs both distributions over one vocabulary, so a
// difference in tokenizer or in logits width is a start-up error, never a silent truncation.
import { compareTokenizers } from "#core/formats/tokenizer.ts";
import type { OrtSessionOptions } from "#inference/model/execution-provider.ts";
import { MismatchedPairError } from "./errors.ts";
import type { OpenedSession, ServedModel } from "./served-model.ts";
import { openModelSession, withTokenizer } from "./served-model.ts";

export interface ModelPair {
  expert: ServedModel;
  amateur: ServedModel;
}

/** Every reason the two cannot be served as a pair (empty when they can). */
export function pairDifferences(expert: ServedModel, amateur: ServedModel): string[] {
  const differences = compareTokenizers(expert.tokenizer, amateur.tokenizer);
  if (expert.vocabSize !== amateur.vocabSize) {
    differences.push(`logits width differs: expert ${expert.vocabSize}, amateur ${amateur.vocabSize}`);
  }
  return differences;
}

/**
 * Opens both sessions, then both tokenizers, then hashes the fingerprints (one file at a
 * time, on a worker thread, while the service already listens). ONNX Runtime's loading peaks
 * above what it keeps (the source pages of the packed weights stay mapped until a session is
 * ready); a 150k-token tokenizer's ~100 MiB of JavaScript heap, or a hashing thread's ~30 MiB
 * and its CPU, would otherwise sit on top of that peak.
 */
export async function openModelPair(expertDir: string, amateurDir: string, options: OrtSessionOptions): Promise<ModelPair> {
  const opened: OpenedSession[] = [];
  let sessionsOpen!: () => void;
  // Never settles when a session fails: nothing is hashed for a pair that is not served.
  const hashAfter = new Promise<void>((resolve) => (sessionsOpen = resolve));
  try {
    opened.push(await openModelSession("expert", expertDir, options, hashAfter));
    opened.push(await openModelSession("amateur", amateurDir, options, opened[0].fingerprint));
    const expert = withTokenizer(opened[0], options);
    const amateur = withTokenizer(opened[1], options, expert);
    const differences = pairDifferences(expert, amateur);
    if (differences.length > 0) throw new MismatchedPairError(differences);
    sessionsOpen();
    return { expert, amateur };
  } catch (err) {
    await Promise.all(opened.map((o) => o.session.release()));
    throw err;
  }
}
