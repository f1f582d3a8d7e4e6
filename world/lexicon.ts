// Every word the built-in world can write: the slot fillers (names, objects, containers,
// shop items) and the sentence templates of each kind. The generator renders only these
// templates and the tokenizer's vocabulary is built from them, so the two cannot drift apart.

export const NAMES = ["Tom", "Ann", "Ben", "Mia", "Sam", "Eva", "Max", "Lily", "Leo", "Zoe"] as const;
export const OBJECTS = ["apples", "marbles", "cards", "stickers", "shells", "coins"] as const;
export const CONTAINERS = ["bags", "boxes", "packs"] as const;
export const ITEMS = ["pens", "books", "cups", "toys", "hats"] as const;

/** Slots that take a word from a list; every other `{slot}` takes a whole number. */
export const WORD_SLOTS: Record<string, readonly string[]> = {
  name: NAMES,
  friend: NAMES,
  other: NAMES,
  object: OBJECTS,
  container: CONTAINERS,
  item: ITEMS,
  item2: ITEMS,
};

/**
 * Sentence templates by kind. Variants of one kind say the same arithmetic in other words;
 * the kind, not the variant, is part of a problem's canonical content (and so of its split).
 */
export const SENTENCES = {
  // story: one person's running amount
  has: ["{name} has {a} {object}."],
  hasGroups: ["{name} has {k} {container} of {m} {object}."],
  add: ["{name} buys {n} more {object}.", "{name} finds {n} more {object}.", "{friend} gives {name} {n} more {object}."],
  sub: ["{name} gives {n} {object} to {friend}.", "{name} sells {n} {object}.", "{name} loses {n} {object}."],
  buyGroups: ["{name} buys {k} {container} of {m} {object}."],
  half: ["{name} gives half of the {object} to {friend}."],
  share: ["{name} shares the {object} equally among {k} friends."],
  askHave: ["How many {object} does {name} have now?"],
  askEach: ["How many {object} does each friend get?"],
  // compare: amounts of two or three people, each said relative to another
  more: ["{friend} has {n} more {object} than {name}."],
  fewer: ["{friend} has {n} fewer {object} than {name}."],
  times: ["{friend} has {k} times as many {object} as {name}."],
  // the same words with the known person first: "more" now means the new person has fewer
  moreRev: ["{name} has {n} more {object} than {friend}."],
  fewerRev: ["{name} has {n} fewer {object} than {friend}."],
  askOne: ["How many {object} does {name} have?"],
  askTwo: ["How many {object} do {name} and {friend} have together?"],
  askThree: ["How many {object} do {name}, {friend} and {other} have together?"],
  // shop: prices, totals and change
  buyItems: ["{name} buys {k} {item} for {p} dollars each."],
  buyMoreItems: ["{name} also buys {k} {item2} for {p} dollars each."],
  pays: ["{name} pays with {m} dollars."],
  askChange: ["How many dollars does {name} get back?"],
  askSpend: ["How many dollars does {name} spend?"],
} as const satisfies Record<string, readonly string[]>;

export type SentenceKind = keyof typeof SENTENCES;

/** Fills `{slot}` placeholders; a slot without a value is a generator bug and throws. */
export function fillTemplate(template: string, slots: Record<string, string | number>): string {
  return template.replace(/\{(\w+)\}/g, (_, slot: string) => {
    const value = slots[slot];
    if (value === undefined) throw new Error(`template ${JSON.stringify(template)} needs slot {${slot}}`);
    return String(value);
  });
}

/** The literal words of all templates plus every slot filler, each once, in first-seen order. */
export function lexiconWords(): string[] {
  const words = new Set<string>();
  for (const variants of Object.values(SENTENCES)) {
    for (const template of variants) {
      for (const word of template.replace(/\{\w+\}/g, " ").match(/[A-Za-z]+/g) ?? []) words.add(word);
    }
  }
  for (const fillers of Object.values(WORD_SLOTS)) for (const word of fillers) words.add(word);
  return [...words];
}

/** Words that can open a question (and so appear without a leading space): the first word of any template. */
export function questionOpeningWords(): string[] {
  const words = new Set<string>();
  for (const variants of Object.values(SENTENCES)) {
    for (const template of variants) {
      const slot = /^\{(\w+)\}/.exec(template);
      if (slot) for (const word of WORD_SLOTS[slot[1]] ?? []) words.add(word);
      else words.add(/^[A-Za-z]+/.exec(template)![0]);
    }
  }
  return [...words];
}
