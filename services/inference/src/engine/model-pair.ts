// The expert and the amateur, opened together and refused together when they cannot be
// compared token for token: the method needs both distributions over one vocabulary, so a
// difference in tokenizer or in logits width is a start-up error, never a silent truncation.
import { compareTokenizers } from "#core/formats/tokenizer.ts";
import type { OrtSessionOptions } from "#inference/model/execution-provider.ts";
import { MismatchedPairError } from "./errors.ts";
import type { ServedModel } from "./served-model.ts";
import { openServedModel } from "./served-model.ts";

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

export async function openModelPair(expertDir: string, amateurDir: string, options: OrtSessionOptions): Promise<ModelPair> {
  const expert = await openServedModel("expert", expertDir, options);
  let amateur: ServedModel;
  try {
    amateur = await openServedModel("amateur", amateurDir, options, expert);
  } catch (err) {
    await expert.session.release();
    throw err;
  }
  const differences = pairDifferences(expert, amateur);
  if (differences.length > 0) {
    await Promise.all([expert.session.release(), amateur.session.release()]);
    throw new MismatchedPairError(differences);
  }
  return { expert, amateur };
}
