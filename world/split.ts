// Train/validation/test membership of a world problem. The split is a pure function of the
// problem's canonical content (sentence kinds and numbers, read back from the question text alone,
// names, objects and wording variants erased), so a question's split can be computed by
// anyone holding its text, and two problems that differ only in wording share a split.
import { createHash } from "node:crypto";
import { WorldConfigError } from "./errors.ts";
import { SENTENCES, WORD_SLOTS, type SentenceKind } from "./lexicon.ts";

export type Split = "train" | "validation" | "test";

export const SPLITS: readonly Split[] = ["train", "validation", "test"];

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
  const mentioned = new Set<string>();
  for (const sentence of question.split(/(?<=[.?]) /)) {
    const matches = SENTENCE_PATTERNS.filter(({ pattern }) => pattern.test(sentence)).map((m) => m.kind);
    if (matches.length === 0) throw new WorldConfigError("question", `sentence ${JSON.stringify(sentence)} is not a world sentence`);
    kinds.push(matches.length === 1 ? matches[0] : comparisonKind(matches, sentence, mentioned));
    numbers.push(...(sentence.match(/\d+/g) ?? []));
    for (const word of sentence.match(/[A-Za-z]+/g) ?? []) if (NAME_SET.has(word)) mentioned.add(word);
  }
  return `${kinds.join(" ")}|${numbers.join(" ")}`;
}

const NAME_SET: ReadonlySet<string> = new Set(WORD_SLOTS.name);

// "X has 5 more apples than Y." reads as `more` (X is new: X = Y + 5) or `moreRev` (X was
// named before: Y = X - 5); which one is told by whether the sentence's subject is known.
function comparisonKind(kinds: SentenceKind[], sentence: string, mentioned: ReadonlySet<string>): SentenceKind {
  const subjectKnown = mentioned.has(sentence.split(" ")[0]);
  const kind = kinds.find((k) => k.endsWith("Rev") === subjectKnown);
  if (kinds.length !== 2 || kind === undefined) throw new WorldConfigError("question", `sentence ${JSON.stringify(sentence)} reads as ${kinds.join(" or ")}`);
  return kind;
}

/**
 * Ten buckets by the first 32 bits of sha256(canonical): bucket 0 is test, bucket 1 is
 * validation, the other eight are train.
 */
export function splitOf(canonical: string): Split {
  const bucket = createHash("sha256").update(canonical, "utf8").digest().readUInt32BE(0) % 10;
  return bucket === 0 ? "test" : bucket === 1 ? "validation" : "train";
}
