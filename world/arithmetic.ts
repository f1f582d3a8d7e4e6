// The built-in reasoning task: multi-step arithmetic word problems with a short, regular
// worked solution in the GSM8K layout (calculator lines, then `#### N`), generated
// deterministically from a seed. A tiny model can learn the format; getting the numbers
// right takes the several reasoning steps the method is about.
//
// One trap is built in: a quarter of the "more"/"fewer" comparisons are said from the known
// person's side ("Tom has 5 more apples than Ann", Tom known: Ann has 5 fewer), so the keyword
// points to the wrong operation. A model that reads keywords gets them wrong; telling them
// apart takes noticing who was named before.
//
// Train, validation and test share no problem, by construction: a problem's split is a pure
// function of its canonical content (split.ts), and the generator for a split only emits
// problems whose canonical content hashes to that split.
import { SeededRandom } from "#core/math/random.ts";
import { problemId } from "#core/tasks/problems.ts";
import { WorldConfigError } from "./errors.ts";
import { SENTENCES, WORD_SLOTS, fillTemplate, type SentenceKind } from "./lexicon.ts";
import { SPLITS, canonicalOf, splitOf, type Split } from "./split.ts";

export type { Split } from "./split.ts";
export { SPLITS, canonicalOf, splitOf } from "./split.ts";

export type Family = "story" | "compare" | "shop";
export type Operator = "+" | "-" | "*" | "/";

export const FAMILIES: readonly Family[] = ["story", "compare", "shop"];

/** The knobs that set how hard the world is; the lead tunes the expert-amateur gap with them. */
export interface WorldDifficulty {
  /** Fewest calculator lines in a solution. */
  minSteps: number;
  /** Most calculator lines in a solution (compare and shop support 2..4, story any). */
  maxSteps: number;
  /** Largest starting or added amount written in a question, and largest quotient of a division. */
  maxNumber: number;
  /**
   * Largest factor: both sides of every multiplication (group count and size, count and
   * price, "k times as many") and every divisor, so products are times-table facts.
   */
  maxFactor: number;
  /** Largest value anywhere in a calculator line (all values are whole, 0..maxResult). */
  maxResult: number;
  /** Template families that may be drawn. */
  families: readonly Family[];
  /** Whether halving and sharing (exact division) may appear. */
  division: boolean;
  /**
   * Share of "more"/"fewer" comparisons said from the known person's side ("Tom has 5 more
   * than Ann", Tom known: Ann has 5 fewer), where the keyword points to the wrong operation.
   */
  reversedComparisons: number;
}

export const DEFAULT_DIFFICULTY: WorldDifficulty = {
  minSteps: 2,
  maxSteps: 4,
  maxNumber: 50,
  maxFactor: 9,
  maxResult: 999,
  families: FAMILIES,
  division: true,
  reversedComparisons: 0.25,
};

const FAMILY_STEPS: Record<Family, { min: number; max: number }> = {
  story: { min: 1, max: Number.POSITIVE_INFINITY },
  compare: { min: 2, max: 4 },
  shop: { min: 2, max: 4 },
};

/** One calculator line of a worked solution: `a op b = result`. */
export interface CalcStep {
  a: number;
  op: Operator;
  b: number;
  result: number;
}

export interface ArithmeticProblem {
  /** `problemId(question)`, the same id the problems reader gives the written file's line. */
  id: string;
  question: string;
  /** GSM8K layout: one calculator line per step, then `#### N`. */
  answer: string;
  final: number;
  steps: CalcStep[];
  family: Family;
  /** Sentence kinds and numbers, e.g. `has add askHave|12 5`: what the split is a function of. */
  canonical: string;
  split: Split;
}

export function formatStep(step: CalcStep): string {
  return `${step.a} ${step.op} ${step.b} = ${step.result}`;
}

export function formatSolution(steps: CalcStep[]): string {
  return `${steps.map(formatStep).join("\n")}\n#### ${steps[steps.length - 1].result}`;
}

/** The exact result of `a op b`, or null when it is not a whole number. */
export function applyOperator(a: number, op: Operator, b: number): number | null {
  switch (op) {
    case "+":
      return a + b;
    case "-":
      return a - b;
    case "*":
      return a * b;
    case "/":
      return b !== 0 && a % b === 0 ? a / b : null;
  }
}

// ---------------------------------------------------------------- difficulty

function checkInteger(name: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min) {
    throw new WorldConfigError(name, `must be an integer >= ${min}, got ${value}`);
  }
}

/** Fills defaults and validates; every problem the result allows fits the tokenizer and the checker. */
export function resolveDifficulty(overrides: Partial<WorldDifficulty> = {}): WorldDifficulty {
  const d: WorldDifficulty = { ...DEFAULT_DIFFICULTY, ...overrides };
  checkInteger("minSteps", d.minSteps, 1);
  checkInteger("maxSteps", d.maxSteps, d.minSteps);
  checkInteger("maxNumber", d.maxNumber, 5);
  checkInteger("maxFactor", d.maxFactor, 2);
  checkInteger("maxResult", d.maxResult, Math.max(d.maxNumber, d.maxFactor * d.maxFactor) + 10);
  if (!(d.reversedComparisons >= 0 && d.reversedComparisons <= 1)) {
    throw new WorldConfigError("reversedComparisons", `must be a number in [0, 1], got ${d.reversedComparisons}`);
  }
  if (d.families.length === 0) throw new WorldConfigError("families", "must name at least one family");
  for (const family of d.families) {
    if (!FAMILIES.includes(family)) {
      throw new WorldConfigError("families", `unknown family ${JSON.stringify(family)} (known: ${FAMILIES.join(", ")})`);
    }
  }
  for (let steps = d.minSteps; steps <= d.maxSteps; steps++) {
    if (familiesFor(d, steps).length === 0) {
      throw new WorldConfigError("families", `none of ${d.families.join(", ")} can make a ${steps}-step problem`);
    }
  }
  return d;
}

function familiesFor(d: WorldDifficulty, steps: number): Family[] {
  return d.families.filter((f) => steps >= FAMILY_STEPS[f].min && steps <= FAMILY_STEPS[f].max);
}

// ---------------------------------------------------------------- drafting
// Every number a question writes before a plural noun is at least 2 ("1 shells" would be a
// word the model sees nowhere else), and every running amount stays at least 1.

/**
 * A sentence to render: its kind and the values of its slots. Words are chosen at render
 * time; a slot value `#i` stands for person i of the problem (compare says who is who).
 */
interface Sentence {
  kind: SentenceKind;
  slots: Record<string, string | number>;
}

/** A problem before wording: what is said and the worked steps. */
interface Draft {
  family: Family;
  sentences: Sentence[];
  steps: CalcStep[];
}

/** Uniform whole number in [lo, hi]. */
function between(rng: SeededRandom, lo: number, hi: number): number {
  return lo + rng.int(hi - lo + 1);
}

function pick<T>(rng: SeededRandom, items: readonly T[]): T {
  return items[rng.int(items.length)];
}

/** Builds calculator lines, failing the draft when any value in a line leaves 0..maxResult. */
class Calculator {
  readonly steps: CalcStep[] = [];
  ok = true;
  constructor(private readonly maxResult: number) {}

  run(a: number, op: Operator, b: number): number {
    const result = applyOperator(a, op, b);
    if (result === null || Math.min(a, b, result) < 0 || Math.max(a, b, result) > this.maxResult) this.ok = false;
    this.steps.push({ a, op, b, result: result ?? 0 });
    return result ?? 0;
  }
}

type StoryEvent = "add" | "sub" | "buyGroups" | "half" | "share";

function storyEvents(d: WorldDifficulty, left: number, amount: number): StoryEvent[] {
  const events: StoryEvent[] = ["add"];
  if (amount >= 3) events.push("sub");
  if (left >= 2) events.push("buyGroups");
  if (d.division && amount % 2 === 0 && amount / 2 <= d.maxNumber) events.push("half");
  if (d.division && left === 1 && divisors(amount, d.maxFactor, d.maxNumber).length > 0) events.push("share");
  return events;
}

/** Divisors k in 2..maxFactor that leave 2..maxQuotient per share. */
function divisors(amount: number, maxFactor: number, maxQuotient: number): number[] {
  const ks: number[] = [];
  for (let k = 2; k <= maxFactor && amount / k >= 2; k++) {
    if (amount % k === 0 && amount / k <= maxQuotient) ks.push(k);
  }
  return ks;
}

/** One person's amount changes event by event; one calculator line per event (two for buying groups). */
function draftStory(rng: SeededRandom, d: WorldDifficulty, lines: number): Draft | null {
  const calc = new Calculator(d.maxResult);
  const sentences: Sentence[] = [];
  let left = lines;
  let amount: number;
  if (left >= 2 && rng.next() < 0.3) {
    const k = between(rng, 2, d.maxFactor);
    const m = between(rng, 2, d.maxFactor);
    amount = calc.run(k, "*", m);
    sentences.push({ kind: "hasGroups", slots: { k, m } });
    left -= 1;
  } else {
    amount = between(rng, 2, d.maxNumber);
    sentences.push({ kind: "has", slots: { a: amount } });
  }
  let question: Sentence = { kind: "askHave", slots: {} };
  while (left > 0) {
    const event = pick(rng, storyEvents(d, left, amount));
    if (event === "add") {
      const n = between(rng, 2, d.maxNumber);
      amount = calc.run(amount, "+", n);
      sentences.push({ kind: "add", slots: { n } });
    } else if (event === "sub") {
      const n = between(rng, 2, Math.min(d.maxNumber, amount - 1));
      amount = calc.run(amount, "-", n);
      sentences.push({ kind: "sub", slots: { n } });
    } else if (event === "buyGroups") {
      const k = between(rng, 2, d.maxFactor);
      const m = between(rng, 2, d.maxFactor);
      amount = calc.run(amount, "+", calc.run(k, "*", m));
      sentences.push({ kind: "buyGroups", slots: { k, m } });
      left -= 1;
    } else if (event === "half") {
      amount = calc.run(amount, "/", 2);
      sentences.push({ kind: "half", slots: {} });
    } else {
      const k = pick(rng, divisors(amount, d.maxFactor, d.maxNumber));
      amount = calc.run(amount, "/", k);
      sentences.push({ kind: "share", slots: { k } });
      question = { kind: "askEach", slots: {} };
    }
    left -= 1;
  }
  sentences.push(question);
  return finishDraft("story", sentences, calc);
}

type Relation = "more" | "fewer" | "times";

/** Says `who`'s amount relative to `ref`'s and computes it (one calculator line). */
function relate(rng: SeededRandom, d: WorldDifficulty, calc: Calculator, refAmount: number, ref: number, who: number): [Sentence, number] {
  const relations: Relation[] = ["more"];
  if (refAmount >= 3) relations.push("fewer");
  if (refAmount <= d.maxFactor) relations.push("times");
  const relation = pick(rng, relations);
  const names = { name: `#${ref}`, friend: `#${who}` };
  if (relation !== "times" && d.reversedComparisons > 0 && rng.next() < d.reversedComparisons) {
    // said from the known person's side: "ref has n more than who" means who = ref - n
    if (relation === "more" && refAmount >= 3) {
      const n = between(rng, 2, Math.min(d.maxNumber, refAmount - 1));
      return [{ kind: "moreRev", slots: { ...names, n } }, calc.run(refAmount, "-", n)];
    }
    if (relation === "fewer") {
      const n = between(rng, 2, d.maxNumber);
      return [{ kind: "fewerRev", slots: { ...names, n } }, calc.run(refAmount, "+", n)];
    }
  }
  if (relation === "more") {
    const n = between(rng, 2, d.maxNumber);
    return [{ kind: "more", slots: { ...names, n } }, calc.run(refAmount, "+", n)];
  }
  if (relation === "fewer") {
    const n = between(rng, 2, Math.min(d.maxNumber, refAmount - 1));
    return [{ kind: "fewer", slots: { ...names, n } }, calc.run(refAmount, "-", n)];
  }
  const k = between(rng, 2, d.maxFactor);
  return [{ kind: "times", slots: { ...names, k } }, calc.run(refAmount, "*", k)];
}

/** Two or three people, each amount said relative to the previous; the question asks for one or a sum. */
function draftCompare(rng: SeededRandom, d: WorldDifficulty, lines: number): Draft | null {
  const calc = new Calculator(d.maxResult);
  const a = between(rng, 2, d.maxNumber);
  const sentences: Sentence[] = [{ kind: "has", slots: { name: "#0", a } }];
  const [second, b] = relate(rng, d, calc, a, 0, 1);
  sentences.push(second);
  if (lines === 2 && rng.next() < 0.5) {
    calc.run(a, "+", b);
    sentences.push({ kind: "askTwo", slots: { name: "#0", friend: "#1" } });
    return finishDraft("compare", sentences, calc);
  }
  const [third, c] = relate(rng, d, calc, b, 1, 2);
  sentences.push(third);
  if (lines === 2) {
    sentences.push({ kind: "askOne", slots: { name: "#2" } });
  } else if (lines === 3) {
    // askTwo always names the two people introduced last, so kinds and numbers fix the sum
    calc.run(b, "+", c);
    sentences.push({ kind: "askTwo", slots: { name: "#1", friend: "#2" } });
  } else {
    calc.run(calc.run(a, "+", b), "+", c);
    sentences.push({ kind: "askThree", slots: { name: "#0", friend: "#1", other: "#2" } });
  }
  return finishDraft("compare", sentences, calc);
}

/** Buying one or two kinds of items at a price each; the question asks for the spend or the change. */
function draftShop(rng: SeededRandom, d: WorldDifficulty, lines: number): Draft | null {
  const calc = new Calculator(d.maxResult);
  const k = between(rng, 2, d.maxFactor);
  const p = between(rng, 2, d.maxFactor);
  const sentences: Sentence[] = [{ kind: "buyItems", slots: { k, p } }];
  let total = calc.run(k, "*", p);
  if (lines >= 3) {
    const l = between(rng, 2, d.maxFactor);
    const q = between(rng, 2, d.maxFactor);
    sentences.push({ kind: "buyMoreItems", slots: { k: l, p: q } });
    total = calc.run(total, "+", calc.run(l, "*", q));
  }
  if (lines === 3) {
    sentences.push({ kind: "askSpend", slots: {} });
  } else {
    // pays with a round amount above the total, so the change is 1..40
    const paid = 10 * (Math.floor(total / 10) + 1 + rng.int(4));
    calc.run(paid, "-", total);
    sentences.push({ kind: "pays", slots: { m: paid } }, { kind: "askChange", slots: {} });
  }
  return finishDraft("shop", sentences, calc);
}

/** The draft, or null when some value left 0..maxResult (the caller draws again). */
function finishDraft(family: Family, sentences: Sentence[], calc: Calculator): Draft | null {
  return calc.ok ? { family, sentences, steps: calc.steps } : null;
}

// ---------------------------------------------------------------- wording

/** Chooses distinct names for people `#0`, `#1`, `#2` and one object/container/item per problem. */
function render(rng: SeededRandom, draft: Draft): string {
  const people = pickDistinct(rng, WORD_SLOTS.name, 3);
  const items = pickDistinct(rng, WORD_SLOTS.item, 2);
  const words: Record<string, string> = {
    name: people[0],
    friend: people[1],
    other: people[2],
    object: pick(rng, WORD_SLOTS.object),
    container: pick(rng, WORD_SLOTS.container),
    item: items[0],
    item2: items[1],
  };
  const text = draft.sentences.map((sentence) => {
    const slots: Record<string, string | number> = { ...words };
    for (const [slot, value] of Object.entries(sentence.slots)) {
      slots[slot] = typeof value === "string" && value.startsWith("#") ? people[Number(value.slice(1))] : value;
    }
    return fillTemplate(pick(rng, SENTENCES[sentence.kind]), slots);
  });
  return text.join(" ");
}

function pickDistinct(rng: SeededRandom, items: readonly string[], count: number): string[] {
  const pool = [...items];
  const chosen: string[] = [];
  for (let i = 0; i < count; i++) chosen.push(pool.splice(rng.int(pool.length), 1)[0]);
  return chosen;
}

// ---------------------------------------------------------------- generation

export interface GenerateOptions {
  seed: number;
  split: Split;
  difficulty?: Partial<WorldDifficulty>;
}

// The streams of one seed's splits are independent, so the test set does not change when the
// number of training problems does (and the first n of a longer run are the same n).
const STREAM_SALT: Record<Split, number> = { train: 0x1b873593, validation: 0xcc9e2d51, test: 0x5bd1e995 };

function streamSeed(seed: number, split: Split): number {
  return (Math.imul(seed >>> 0, 0x9e3779b1) ^ STREAM_SALT[split]) >>> 0;
}

function draft(rng: SeededRandom, d: WorldDifficulty): Draft | null {
  const lines = between(rng, d.minSteps, d.maxSteps);
  const family = pick(rng, familiesFor(d, lines));
  if (family === "story") return draftStory(rng, d, lines);
  if (family === "compare") return draftCompare(rng, d, lines);
  return draftShop(rng, d, lines);
}

/**
 * An endless deterministic stream of problems of one split (same seed, split and difficulty:
 * same stream). Problems may repeat; `generateProblems` deduplicates.
 */
export function* arithmeticProblems(options: GenerateOptions): Generator<ArithmeticProblem> {
  const d = resolveDifficulty(options.difficulty);
  if (!SPLITS.includes(options.split)) {
    throw new WorldConfigError("split", `unknown split ${JSON.stringify(options.split)} (known: ${SPLITS.join(", ")})`);
  }
  const rng = new SeededRandom(streamSeed(options.seed, options.split));
  let misses = 0;
  for (;;) {
    const candidate = draft(rng, d);
    const question = candidate ? render(rng, candidate) : "";
    const canonical = candidate ? canonicalOf(question) : "";
    if (!candidate || splitOf(canonical) !== options.split) {
      if (++misses > 100_000) throw new WorldConfigError("difficulty", "no valid problem in 100000 draws");
      continue;
    }
    misses = 0;
    yield {
      id: problemId(question),
      question,
      answer: formatSolution(candidate.steps),
      final: candidate.steps[candidate.steps.length - 1].result,
      steps: candidate.steps,
      family: candidate.family,
      canonical,
      split: options.split,
    };
  }
}

/** `count` problems of one split, distinct by canonical content (and so by question text). */
export function generateProblems(count: number, options: GenerateOptions): ArithmeticProblem[] {
  checkInteger("count", count, 0);
  const seen = new Set<string>();
  const problems: ArithmeticProblem[] = [];
  const stream = arithmeticProblems(options);
  let repeats = 0;
  while (problems.length < count) {
    const problem = stream.next().value as ArithmeticProblem;
    if (seen.has(problem.canonical)) {
      if (++repeats > 20 * count + 1000) {
        throw new WorldConfigError("count", `only ${problems.length} distinct ${options.split} problems found; the difficulty allows too few for ${count}`);
      }
      continue;
    }
    seen.add(problem.canonical);
    problems.push(problem);
  }
  return problems;
}
