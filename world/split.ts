// Train/test membership of a world problem. The split is a pure function of the problem's
// canonical content (sentence kinds and numbers, read back from the question text alone,
// names, objects and wording variants erased), so a question's split can be computed by
// anyone holding its text, and two problems that differ only in wording share a split.
import { createHash } from "node:crypto";
import { WorldConfigError } from "./errors.ts";
import { SENTENCES, WORD_SLOTS, type SentenceKind } from "./lexicon.ts";

export type Split = "train" | "test";

const WHOLE_NUMBER = "(\\d+)";

// Each template as a full-sentence pattern: word slots match any filler, number slots a
// whole number. Built once; `canonicalOf` uses them to read a question back into kinds.
const SENTENCE_PATTERNS: { kind: SentenceKind; pattern: RegExp }[] = Object.entries(SENTENCES).flatMap(
  ([kind, variants]) =>
    variants.map((template) => {
      const source = template
        .split(/(\{\w+\})/)
        .map((part) => {
          const slot = /^\{(\w+)\}$/.exec(part);
          if (!slot) return part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
          const fillers = WORD_SLOTS[slot[1]];
          return fillers ? `(?:${fillers.join("|")})` : WHOLE_NUMBER;
        })
        .join("");
      return { kind: kind as SentenceKind, pattern: new RegExp(`^${source}$`) };
    }),
);

/**
 * The canonical content of a world question, read from its text alone: the sentence kinds
 * and the numbers in order (`has add askHave|12 5`). Names, objects and wording variants are
 * erased, so two questions that differ only in those share it. Throws on text the world
 * could not have written.
 */
export function canonicalOf(question: string): string {
  const kinds: string[] = [];
  const numbers: string[] = [];
  for (const sentence of question.split(/(?<=[.?]) /)) {
    const match = SENTENCE_PATTERNS.find(({ pattern }) => pattern.test(sentence));
    if (!match) throw new WorldConfigError("question", `sentence ${JSON.stringify(sentence)} is not a world sentence`);
    kinds.push(match.kind);
    numbers.push(...(sentence.match(/\d+/g) ?? []));
  }
  return `${kinds.join(" ")}|${numbers.join(" ")}`;
}

/** One problem in ten is a test problem: test iff the first 32 bits of sha256(canonical) % 10 == 0. */
export function splitOf(canonical: string): Split {
  const digest = createHash("sha256").update(canonical, "utf8").digest();
  return digest.readUInt32BE(0) % 10 === 0 ? "test" : "train";
}
