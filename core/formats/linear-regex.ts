// A regular-expression matcher whose time is linear in the text, for the one place the project
// matches a pattern a client sent: PEFT's string form of target_modules, which PEFT applies with
// Python's re.fullmatch to every module path. JavaScript's RegExp backtracks, so a nested
// quantifier such as `mo([a-z._0-9]+)+X` held the event loop (every call of every client) for
// tens of seconds. Here a pattern becomes a Thompson NFA, simulated one character at a time over
// the set of live states: the work is at most (program states) x (text length). The program is
// bounded while it is built, so building it costs no more than the bound either, and the state
// visits of all matches of one pattern together are bounded too (MAX_MATCH_WORK).
//
// Why not a library: re2js (the pure-JS port of RE2) also matches in linear time, but the only
// bound it puts on a program is RE2's own (about 1.4 million parse nodes): a 250-character
// pattern of `\pL{0,1000}` repeats compiles to some 46,000 instructions and held the event loop
// about 300 ms, compile plus 168 module paths, before any check of ours could look at its size;
// its parser is not exported to look first. The syntax PEFT users write is small, and counting
// states as they are built closes that hole, so the matcher lives here.
//
// Accepted, with Python's meaning (classes are ASCII, as module paths are): literals; `.` (any
// character but a newline); classes `[...]` with ranges, negation and the class escapes; `\d \D
// \w \W \s \S`; escaped punctuation, `\t \n \r \f \v \a`, `\xhh`, `\uhhhh`, `\Uhhhhhhhh`; groups
// `(...)`, `(?:...)`, `(?P<name>...)`; alternation `|`; `* + ?`, `{m}`, `{m,}`, `{,n}`, `{m,n}`
// (counts up to MAX_REPEAT), each also lazy (for a yes/no full match lazy and greedy agree);
// anchors `^ $ \A \Z` and word boundaries `\b \B`. Refused, with the position named:
// backreferences, lookahead and lookbehind, inline flags, comments, atomic groups, conditionals,
// possessive quantifiers, and patterns beyond the limits below (1,024 characters, counts up to
// 100, 2,048 states, 500,000 state visits in all).

/** Longest pattern accepted, in characters (code points). */
export const MAX_PATTERN_LENGTH = 1024;
/** Largest count in `{m,n}`. */
export const MAX_REPEAT = 100;
/** Most NFA states a pattern may compile to; bounds the work per text character. */
export const MAX_PROGRAM_STATES = 2048;
/**
 * Most state visits one compiled pattern may make over all the texts it is matched against.
 * The per-character bound above times a model's module paths is still too long to hold the
 * event loop for (2,000 live states x 33 characters x 560 paths of an 80-layer model took
 * 0.6-0.8 s here), so the total is bounded too, at 10-40 ms of work here. Patterns people write
 * keep a few states live: an unsloth-style 359-character pattern makes 270,000 visits over
 * the 560 paths (see the tests), and half that on a 40-layer model.
 */
export const MAX_MATCH_WORK = 500_000;

/** A pattern outside the accepted syntax or limits; `position` is its code-point offset (-1: about the whole pattern or its work). */
export class RegexNotAcceptedError extends Error {
  constructor(
    readonly position: number,
    readonly problem: string,
  ) {
    super(position < 0 ? problem : `${problem} at position ${position}`);
    this.name = "RegexNotAcceptedError";
  }
}

// ---------------------------------------------------------------------------------------
// Character sets: sorted, disjoint, inclusive [lo, hi] code-point ranges, flattened.

const MAX_CODE_POINT = 0x10ffff;
const NEWLINE = 0x0a;
type Ranges = readonly number[];

const range = (lo: number, hi = lo): Ranges => [lo, hi];
const DIGIT = range(0x30, 0x39);
const WORD: Ranges = [0x30, 0x39, 0x41, 0x5a, 0x5f, 0x5f, 0x61, 0x7a];
const SPACE: Ranges = [0x09, 0x0d, 0x20, 0x20];

function union(...sets: Ranges[]): Ranges {
  const pairs: [number, number][] = [];
  for (const set of sets) for (let i = 0; i < set.length; i += 2) pairs.push([set[i], set[i + 1]]);
  pairs.sort((a, b) => a[0] - b[0]);
  const out: number[] = [];
  for (const [lo, hi] of pairs) {
    if (out.length > 0 && lo <= out[out.length - 1] + 1) out[out.length - 1] = Math.max(out[out.length - 1], hi);
    else out.push(lo, hi);
  }
  return out;
}

function complement(set: Ranges): Ranges {
  const out: number[] = [];
  let next = 0;
  for (let i = 0; i < set.length; i += 2) {
    if (set[i] > next) out.push(next, set[i] - 1);
    next = set[i + 1] + 1;
  }
  if (next <= MAX_CODE_POINT) out.push(next, MAX_CODE_POINT);
  return out;
}

function contains(set: Ranges, c: number): boolean {
  for (let i = 0; i < set.length && set[i] <= c; i += 2) if (c <= set[i + 1]) return true;
  return false;
}

const isWordChar = (c: number | undefined) => c !== undefined && contains(WORD, c);

// ---------------------------------------------------------------------------------------
// Syntax tree

type Assertion = "start" | "end" | "endOfText" | "wordBoundary" | "notWordBoundary";

type Node =
  | { kind: "empty" }
  | { kind: "chars"; set: Ranges }
  | { kind: "assert"; at: Assertion }
  | { kind: "concat"; items: Node[] }
  | { kind: "alt"; options: Node[] }
  | { kind: "repeat"; node: Node; min: number; max: number };

const EMPTY: Node = { kind: "empty" };

/** Recursive descent over the pattern's code points. */
class Parser {
  private pos = 0;

  constructor(private readonly cps: number[]) {}

  parse(): Node {
    const node = this.alternation();
    if (this.pos < this.cps.length) throw this.error("unbalanced parenthesis: ')' without '('");
    return node;
  }

  private error(problem: string, at = this.pos): RegexNotAcceptedError {
    return new RegexNotAcceptedError(at, problem);
  }

  private peek(offset = 0): string | undefined {
    const c = this.cps[this.pos + offset];
    return c === undefined ? undefined : String.fromCodePoint(c);
  }

  private lookingAt(text: string): boolean {
    return [...text].every((ch, i) => this.peek(i) === ch);
  }

  private alternation(): Node {
    const options = [this.sequence()];
    while (this.peek() === "|") {
      this.pos++;
      options.push(this.sequence());
    }
    return options.length === 1 ? options[0] : { kind: "alt", options };
  }

  private sequence(): Node {
    const items: Node[] = [];
    while (this.pos < this.cps.length && this.peek() !== "|" && this.peek() !== ")") items.push(this.repeated());
    return items.length === 0 ? EMPTY : items.length === 1 ? items[0] : { kind: "concat", items };
  }

  private repeated(): Node {
    let node = this.atom();
    let quantified = false;
    for (;;) {
      const at = this.pos;
      const bounds = this.quantifier();
      if (!bounds) return node;
      if (quantified) throw this.error("a quantifier cannot follow another (possessive forms are not supported)", at);
      if (node.kind === "assert") throw this.error("nothing to repeat", at);
      if (this.peek() === "?") this.pos++;
      quantified = true;
      const [min, max] = bounds;
      // Repeating the empty string, or anything zero times, is the empty string: one state
      // however deeply such counts nest, instead of their product.
      node = max === 0 || node === EMPTY ? EMPTY : { kind: "repeat", node, min, max };
    }
  }

  /** A quantifier at the cursor, consumed, as [min, max]; null when there is none. */
  private quantifier(): [number, number] | null {
    const c = this.peek();
    if (c === "*" || c === "+" || c === "?") {
      this.pos++;
      return c === "*" ? [0, Infinity] : c === "+" ? [1, Infinity] : [0, 1];
    }
    if (c !== "{") return null;
    // As in Python, a brace that does not open {m}, {m,}, {,n} or {m,n} is a literal.
    const m = /^\{(\d*)(,(\d*))?\}/.exec(String.fromCodePoint(...this.cps.slice(this.pos, this.pos + 64)));
    if (!m || (m[1] === "" && m[2] === undefined)) return null;
    const at = this.pos;
    this.pos += m[0].length;
    const min = m[1] === "" ? 0 : Number(m[1]);
    const max = m[2] === undefined ? min : m[3] === "" ? Infinity : Number(m[3]);
    for (const count of [min, max]) {
      if (count !== Infinity && count > MAX_REPEAT) throw this.error(`repeat count ${count} is above the limit of ${MAX_REPEAT}`, at);
    }
    if (min > max) throw this.error(`repeat {${min},${max}} has its minimum above its maximum`, at);
    return [min, max];
  }

  private atom(): Node {
    const at = this.pos;
    const c = this.peek()!;
    if (c === "(") return this.group();
    if (c === "[") return this.characterClass();
    this.pos++;
    switch (c) {
      case ".":
        return { kind: "chars", set: complement(range(NEWLINE)) };
      case "^":
        return { kind: "assert", at: "start" };
      case "$":
        return { kind: "assert", at: "end" };
      case "\\":
        return this.escape(at, false);
      case "*":
      case "+":
      case "?":
        throw this.error("nothing to repeat", at);
      case "{":
        this.pos = at;
        if (this.quantifier()) throw this.error("nothing to repeat", at);
        this.pos = at + 1;
        return { kind: "chars", set: range(this.cps[at]) };
      default:
        return { kind: "chars", set: range(this.cps[at]) };
    }
  }

  private group(): Node {
    const at = this.pos;
    this.pos++;
    if (this.peek() === "?") {
      const refusals: [string, string][] = [
        ["?P=", "backreferences are not supported"],
        ["?=", "lookahead is not supported"],
        ["?!", "lookahead is not supported"],
        ["?<=", "lookbehind is not supported"],
        ["?<!", "lookbehind is not supported"],
        ["?#", "comments are not supported"],
        ["?>", "atomic groups are not supported"],
        ["?(", "conditionals are not supported"],
      ];
      for (const [prefix, problem] of refusals) if (this.lookingAt(prefix)) throw this.error(problem, at);
      if (this.lookingAt("?:")) {
        this.pos += 2;
      } else if (this.lookingAt("?P<")) {
        const name = /^\?P<([A-Za-z_][A-Za-z0-9_]*)>/.exec(String.fromCodePoint(...this.cps.slice(this.pos, this.pos + 40)));
        if (!name) throw this.error("a group name must be an identifier closed by '>'", at);
        this.pos += name[0].length;
      } else {
        throw this.error(`unsupported group "(${this.peek(0)}${this.peek(1) ?? ""}" (inline flags and other extensions are not supported)`, at);
      }
    }
    const inner = this.alternation();
    if (this.peek() !== ")") throw this.error("missing ')': the group is not closed", at);
    this.pos++;
    return inner;
  }

  /** An escape after its backslash; `inClass` gives \b its class meaning (backspace). */
  private escape(at: number, inClass: boolean): Node {
    const c = this.peek();
    if (c === undefined) throw this.error("the pattern ends with a lone backslash", at);
    this.pos++;
    const chars = (set: Ranges): Node => ({ kind: "chars", set });
    switch (c) {
      case "d":
        return chars(DIGIT);
      case "D":
        return chars(complement(DIGIT));
      case "w":
        return chars(WORD);
      case "W":
        return chars(complement(WORD));
      case "s":
        return chars(SPACE);
      case "S":
        return chars(complement(SPACE));
      case "t":
        return chars(range(0x09));
      case "n":
        return chars(range(0x0a));
      case "v":
        return chars(range(0x0b));
      case "f":
        return chars(range(0x0c));
      case "r":
        return chars(range(0x0d));
      case "a":
        return chars(range(0x07));
      case "x":
        return chars(range(this.hex(2, at)));
      case "u":
        return chars(range(this.hex(4, at)));
      case "U":
        return chars(range(this.hex(8, at)));
    }
    if (inClass) {
      if (c === "b") return chars(range(0x08));
    } else {
      const assertion = ({ b: "wordBoundary", B: "notWordBoundary", A: "start", Z: "endOfText" } as const)[c as "b"];
      if (assertion) return { kind: "assert", at: assertion };
    }
    if (/[1-9]/.test(c)) throw this.error("backreferences are not supported", at);
    if (c === "0") throw this.error("octal escapes are not supported; write \\xhh", at);
    if (/[0-9A-Za-z]/.test(c)) throw this.error(`bad escape \\${c}`, at);
    return chars(range(this.cps[this.pos - 1]));
  }

  private hex(digits: number, at: number): number {
    const text = String.fromCodePoint(...this.cps.slice(this.pos, this.pos + digits));
    if (text.length !== digits || !/^[0-9A-Fa-f]+$/.test(text)) throw this.error(`an escape of this kind needs ${digits} hex digits`, at);
    const value = Number.parseInt(text, 16);
    if (value > MAX_CODE_POINT) throw this.error("the escape is beyond the last Unicode code point", at);
    this.pos += digits;
    return value;
  }

  private characterClass(): Node {
    const at = this.pos;
    this.pos++;
    const negated = this.peek() === "^";
    if (negated) this.pos++;
    const sets: Ranges[] = [];
    let first = true;
    for (;;) {
      const c = this.peek();
      if (c === undefined) throw this.error("unterminated character class", at);
      // As in Python, a ']' first in the class is a literal.
      if (c === "]" && !first) break;
      first = false;
      const itemAt = this.pos;
      const lo = this.classItem();
      if (this.peek() === "-" && this.peek(1) !== undefined && this.peek(1) !== "]") {
        this.pos++;
        const hi = this.classItem();
        if (!isSingle(lo) || !isSingle(hi) || lo[0] > hi[0]) throw this.error("bad character range", itemAt);
        sets.push(range(lo[0], hi[0]));
      } else {
        sets.push(lo);
      }
    }
    this.pos++;
    const set = union(...sets);
    return { kind: "chars", set: negated ? complement(set) : set };
  }

  private classItem(): Ranges {
    const at = this.pos;
    const c = this.cps[this.pos++];
    if (c !== 0x5c) return range(c);
    const node = this.escape(at, true);
    if (node.kind !== "chars") throw this.error("this escape cannot stand in a character class", at);
    return node.set;
  }
}

const isSingle = (set: Ranges) => set.length === 2 && set[0] === set[1];

// ---------------------------------------------------------------------------------------
// Program: instructions in an array, each naming the next by index.

type Inst =
  | { op: "chars"; set: Ranges; next: number }
  | { op: "split"; next: number; alt: number }
  | { op: "jump"; next: number }
  | { op: "assert"; at: Assertion; next: number }
  | { op: "match" };

/** Builds code backwards (each node is given where to continue), refusing once past the limit. */
class Compiler {
  readonly program: Inst[] = [];

  constructor(private readonly maxStates: number) {}

  push(inst: Inst): number {
    if (this.program.length >= this.maxStates) {
      throw new RegexNotAcceptedError(-1, `the pattern compiles to more than ${this.maxStates} states (the limit); write it with fewer or smaller repeats`);
    }
    this.program.push(inst);
    return this.program.length - 1;
  }

  /** Emits `node` continuing at `next`; returns where it starts. */
  emit(node: Node, next: number): number {
    switch (node.kind) {
      case "empty":
        return this.push({ op: "jump", next });
      case "chars":
        return this.push({ op: "chars", set: node.set, next });
      case "assert":
        return this.push({ op: "assert", at: node.at, next });
      case "concat": {
        let start = next;
        for (let i = node.items.length - 1; i >= 0; i--) start = this.emit(node.items[i], start);
        return start;
      }
      case "alt": {
        let start = this.emit(node.options[node.options.length - 1], next);
        for (let i = node.options.length - 2; i >= 0; i--) start = this.push({ op: "split", next: this.emit(node.options[i], next), alt: start });
        return start;
      }
      case "repeat": {
        let start = next;
        if (node.max === Infinity) {
          // x* as a loop: a split that either enters x (which comes back to it) or goes on.
          const loop = this.push({ op: "split", next: -1, alt: next });
          (this.program[loop] as { next: number }).next = this.emit(node.node, loop);
          start = loop;
        } else {
          // x{0,k} as k nested optionals, each skipping straight to `next`.
          for (let i = node.min; i < node.max; i++) start = this.push({ op: "split", next: this.emit(node.node, start), alt: next });
        }
        for (let i = 0; i < node.min; i++) start = this.emit(node.node, start);
        return start;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Matching

export interface RegexLimits {
  maxPatternLength: number;
  maxStates: number;
  maxWork: number;
}

const DEFAULT_LIMITS: RegexLimits = { maxPatternLength: MAX_PATTERN_LENGTH, maxStates: MAX_PROGRAM_STATES, maxWork: MAX_MATCH_WORK };

const OP_CHARS = 0;
const OP_SPLIT = 1;
const OP_JUMP = 2;
const OP_ASSERT = 3;
const OP_MATCH = 4;
const OP_CODES = { chars: OP_CHARS, split: OP_SPLIT, jump: OP_JUMP, assert: OP_ASSERT, match: OP_MATCH } as const;

/**
 * A compiled pattern. The program is flattened into typed arrays, with a 128-bit ASCII bitmap
 * per character state (module paths are ASCII), because the simulation below visits every
 * live state at every character and this is what that costs.
 */
export class LinearRegex {
  private readonly op: Uint8Array;
  private readonly next: Int32Array;
  private readonly alt: Int32Array;
  private readonly ascii: Uint32Array;
  private readonly sets: (Ranges | null)[];
  private readonly assertions: (Assertion | null)[];
  private readonly start: number;
  private readonly matchPc: number;
  // Scratch space reused across calls (matching is synchronous): the live character states
  // before and after a character, a stack for closures, and per-state marks of the step
  // that last reached them (a state is added once per step, which is what bounds the work).
  private live: Int32Array;
  private following: Int32Array;
  private readonly stack: Int32Array;
  private readonly mark: Uint32Array;
  private step = 0;
  private readonly maxWork: number;
  private spent = 0;

  /** Parses and compiles `source`; throws RegexNotAcceptedError outside the accepted syntax or limits. */
  constructor(
    readonly source: string,
    limits: RegexLimits = DEFAULT_LIMITS,
  ) {
    const cps = Array.from(source, (ch) => ch.codePointAt(0)!);
    if (cps.length > limits.maxPatternLength) {
      throw new RegexNotAcceptedError(-1, `the pattern has ${cps.length} characters, above the limit of ${limits.maxPatternLength}`);
    }
    const tree = new Parser(cps).parse();
    const compiler = new Compiler(limits.maxStates);
    this.matchPc = compiler.push({ op: "match" });
    this.start = compiler.emit(tree, this.matchPc);
    const program = compiler.program;
    const n = program.length;
    this.op = Uint8Array.from(program, (inst) => OP_CODES[inst.op]);
    this.next = Int32Array.from(program, (inst) => ("next" in inst ? inst.next : -1));
    this.alt = Int32Array.from(program, (inst) => (inst.op === "split" ? inst.alt : -1));
    this.sets = program.map((inst) => (inst.op === "chars" ? inst.set : null));
    this.assertions = program.map((inst) => (inst.op === "assert" ? inst.at : null));
    this.ascii = new Uint32Array(n * 4);
    program.forEach((inst, pc) => {
      if (inst.op !== "chars") return;
      for (let c = 0; c < 128; c++) if (contains(inst.set, c)) this.ascii[pc * 4 + (c >> 5)] |= 1 << (c & 31);
    });
    this.live = new Int32Array(n);
    this.following = new Int32Array(n);
    this.stack = new Int32Array(2 * n + 2);
    this.mark = new Uint32Array(n);
    this.maxWork = limits.maxWork;
  }

  /** Number of NFA states: the most work one text character can cost. */
  get states(): number {
    return this.op.length;
  }

  /** State visits made so far, over every call of fullMatch. */
  get work(): number {
    return this.spent;
  }

  /**
   * Whether the whole of `text` matches, like Python's re.fullmatch. Throws RegexNotAcceptedError
   * once this pattern's matches together pass the work limit.
   */
  fullMatch(text: string): boolean {
    const cps = Array.from(text, (ch) => ch.codePointAt(0)!);
    this.nextStep();
    let count = this.closure(this.live, 0, this.start, cps, 0);
    for (let pos = 0; pos < cps.length; pos++) {
      if (count === 0) return false;
      const c = cps[pos];
      this.nextStep();
      let added = 0;
      for (let i = 0; i < count; i++) {
        const pc = this.live[i];
        const accepts = c < 128 ? (this.ascii[pc * 4 + (c >> 5)] >>> (c & 31)) & 1 : contains(this.sets[pc]!, c);
        if (accepts) added = this.closure(this.following, added, this.next[pc], cps, pos + 1);
      }
      [this.live, this.following] = [this.following, this.live];
      count = added;
      if (this.spent > this.maxWork) {
        throw new RegexNotAcceptedError(-1, `matching the pattern takes more than ${this.maxWork} state visits (the limit); write it with fewer alternatives or repeats live at once`);
      }
    }
    return this.mark[this.matchPc] === this.step;
  }

  private nextStep(): void {
    // Marks compare equal to the step counter; wrap it (and forget old marks) long before it overflows.
    if (++this.step === 0xffffffff) {
      this.mark.fill(0);
      this.step = 1;
    }
  }

  /**
   * Marks `pc` and every state reachable from it at `pos` without reading a character, and
   * appends the character states among them to `list` from index `count`; returns the new count.
   */
  private closure(list: Int32Array, count: number, pc: number, cps: number[], pos: number): number {
    const { op, next, alt, mark, stack, step } = this;
    let top = 0;
    stack[top++] = pc;
    while (top > 0) {
      const at = stack[--top];
      if (mark[at] === step) continue;
      mark[at] = step;
      this.spent++;
      switch (op[at]) {
        case OP_CHARS:
          list[count++] = at;
          break;
        case OP_JUMP:
          stack[top++] = next[at];
          break;
        case OP_SPLIT:
          stack[top++] = alt[at];
          stack[top++] = next[at];
          break;
        case OP_ASSERT:
          if (holds(this.assertions[at]!, cps, pos)) stack[top++] = next[at];
          break;
      }
    }
    return count;
  }
}

function holds(at: Assertion, cps: number[], pos: number): boolean {
  switch (at) {
    case "start":
      return pos === 0;
    case "end":
      // Python's `$` also matches just before a newline that ends the text.
      return pos === cps.length || (pos === cps.length - 1 && cps[pos] === NEWLINE);
    case "endOfText":
      return pos === cps.length;
    case "wordBoundary":
      return isWordChar(cps[pos - 1]) !== isWordChar(cps[pos]);
    case "notWordBoundary":
      return isWordChar(cps[pos - 1]) === isWordChar(cps[pos]);
  }
}
