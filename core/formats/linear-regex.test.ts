import { describe, expect, it } from "vitest";
import { LinearRegex, MAX_MATCH_WORK, MAX_PATTERN_LENGTH, MAX_PROGRAM_STATES, RegexNotAcceptedError } from "./linear-regex.ts";
import { errorOf } from "#test/helpers/error-of.ts";

const matches = (pattern: string, text: string) => new LinearRegex(pattern).fullMatch(text);

describe("LinearRegex matches whole texts as Python's re.fullmatch does", () => {
  it.each([
    // pattern, text, expected (each worked out by hand from Python's rules)
    ["q_proj", "q_proj", true],
    ["q_proj", "xq_proj", false],
    ["q_proj", "q_projx", false],
    ["", "", true],
    ["", "a", false],
    ["a.c", "abc", true],
    ["a.c", "a\nc", false],
    [".*\\.(q_proj|v_proj)", "model.layers.0.self_attn.q_proj", true],
    [".*\\.(q_proj|v_proj)", "model.layers.0.self_attn.k_proj", false],
    [".*\\.(q_proj|v_proj)", "q_proj", false],
    ["model\\.layers\\.\\d+\\.self_attn\\.[qkvo]_proj", "model.layers.17.self_attn.o_proj", true],
    ["model\\.layers\\.\\d+\\.self_attn\\.[qkvo]_proj", "model.layers..self_attn.o_proj", false],
    ["model\\.layers\\.\\d+\\.self_attn\\.[^qk]_proj", "model.layers.3.self_attn.v_proj", true],
    ["model\\.layers\\.\\d+\\.self_attn\\.[^qk]_proj", "model.layers.3.self_attn.q_proj", false],
    [".*layers\\.(1[6-9]|2[0-3])\\..*proj", "model.layers.19.mlp.up_proj", true],
    [".*layers\\.(1[6-9]|2[0-3])\\..*proj", "model.layers.24.mlp.up_proj", false],
    [".*layers\\.(1[6-9]|2[0-3])\\..*proj", "model.layers.9.mlp.up_proj", false],
    ["a{3}", "aaa", true],
    ["a{3}", "aa", false],
    ["a{2,3}", "aaaa", false],
    ["a{2,}", "aaaaaaa", true],
    ["a{2,}", "a", false],
    ["a{,2}", "", true],
    ["a{,2}", "aaa", false],
    ["(ab){2}c?", "abab", true],
    ["(ab){2}c?", "ababc", true],
    ["(ab){2}c?", "abc", false],
    ["a{0}b", "b", true],
    ["x{b", "x{b", true], // a brace that opens no count is a literal
    ["a{}", "a{}", true],
    ["a+?b*?c??", "aac", true], // lazy forms: same yes/no answer
    ["(?:a|b)*", "abba", true],
    ["(?P<mod>q|k)_proj", "k_proj", true],
    ["(a*)*b", "aaaab", true],
    ["(a|)*", "", true],
    ["[]a]+", "]a]", true], // ']' first in a class is a literal
    ["[a-]+", "-a-", true],
    ["[\\d.]+", "0.17", true],
    ["[\\w]+", "self_attn", true],
    ["\\W", "_", false],
    ["\\D\\S\\s", "a\t ", false],
    ["\\D\\S\\s", "ab ", true],
    ["\\x41\\u00e9\\U0001F600", "Aé😀", true],
    [".", "😀", true], // one character, not two UTF-16 units
    ["^q_proj$", "q_proj", true],
    ["a$", "a\n", false], // $ may match before the final newline, but a full match must still read it
    ["a$\n", "a\n", true],
    ["a\\Z", "a\n", false],
    ["\\Aab", "ab", true],
    [".*\\bq_proj", "model.q_proj", true],
    [".*\\bq_proj", "model_q_proj", false],
    [".*\\Bq_proj", "model_q_proj", true],
    ["a\\+b", "a+b", true],
    ["[\\b]", "\b", true],
  ])("%j on %j is %s", (pattern, text, expected) => {
    expect(matches(pattern, text)).toBe(expected);
  });

  it("a compiled pattern can be used again (its state sets are reused)", () => {
    const re = new LinearRegex(".*\\.(gate|up)_proj");
    expect([re.fullMatch("model.layers.0.mlp.up_proj"), re.fullMatch("model.layers.0.mlp.down_proj"), re.fullMatch("model.layers.1.mlp.gate_proj")]).toEqual([true, false, true]);
  });
});

describe("LinearRegex refuses what it does not support, naming the position", () => {
  it.each([
    ["(a)\\1", 3, "backreferences are not supported"],
    ["(?P<x>a)(?P=x)", 8, "backreferences are not supported"],
    ["(?=a)a", 0, "lookahead is not supported"],
    ["^(?!.*vision).*q_proj", 1, "lookahead is not supported"],
    ["(?<=a)b", 0, "lookbehind is not supported"],
    ["(?i)q_proj", 0, "unsupported group"],
    ["(?>a)", 0, "atomic groups are not supported"],
    ["a*+", 2, "a quantifier cannot follow another"],
    ["a**", 2, "a quantifier cannot follow another"],
    ["*a", 0, "nothing to repeat"],
    ["a|+", 2, "nothing to repeat"],
    ["^*", 1, "nothing to repeat"],
    ["(a", 0, "missing ')'"],
    ["a)", 1, "unbalanced parenthesis"],
    ["[a-", 0, "unterminated character class"],
    ["[z-a]", 1, "bad character range"],
    ["[a-\\d]", 1, "bad character range"],
    ["a{101}", 1, "repeat count 101 is above the limit of 100"],
    ["a{3,2}", 1, "minimum above its maximum"],
    ["\\q", 0, "bad escape \\q"],
    ["\\0", 0, "octal escapes are not supported"],
    ["\\x4", 0, "needs 2 hex digits"],
    ["ab\\", 2, "lone backslash"],
  ])("%j at %i: %s", (pattern, position, problem) => {
    const err = errorOf(() => new LinearRegex(pattern)) as RegexNotAcceptedError;
    expect(err).toBeInstanceOf(RegexNotAcceptedError);
    expect(err.position).toBe(position);
    expect(err.message).toContain(problem);
    expect(err.message).toContain(`at position ${position}`);
  });

  it("refuses a pattern longer than the limit, before parsing it", () => {
    const err = errorOf(() => new LinearRegex("(".repeat(MAX_PATTERN_LENGTH + 1))) as RegexNotAcceptedError;
    expect(err.message).toBe(`the pattern has ${MAX_PATTERN_LENGTH + 1} characters, above the limit of ${MAX_PATTERN_LENGTH}`);
  });

  it("refuses a pattern whose program would pass the state limit, while building it", () => {
    // Nested counts multiply: 100 x 100 copies of one state.
    const err = errorOf(() => new LinearRegex("(?:(?:a){100}){100}")) as RegexNotAcceptedError;
    expect(err.message).toContain(`more than ${MAX_PROGRAM_STATES} states`);
    // The same shape, small enough: 4 x 5 copies of `a` (20) plus the match state.
    expect(new LinearRegex("(?:(?:a){4}){5}").states).toBe(21);
    // x{0} and () stay one empty state, however deeply their counts nest.
    expect(new LinearRegex("(?:(?:(?:(?:a{0}){100}){100}){100}){100}()*").states).toBe(3);
  });

  it("counts states as built: one per character, a split per alternative and per optional copy", () => {
    expect(new LinearRegex("abc").states).toBe(4); // a, b, c, match
    expect(new LinearRegex("a|b").states).toBe(4); // a, b, split, match
    expect(new LinearRegex("a*").states).toBe(3); // split, a, match
    expect(new LinearRegex("a{1,3}").states).toBe(6); // a, 2 x (split, a), match
  });
});

describe("LinearRegex runs in time linear in the text", () => {
  it("the pattern that froze the server for 36 s visits at most states x (length + 1) states per module path", () => {
    const re = new LinearRegex("mo([a-z._0-9]+)+X");
    const path = "model.layers.0.self_attn.q_proj";
    for (let i = 0; i < 100; i++) expect(re.fullMatch(path)).toBe(false);
    // Backtracking tries 2^n ways to split the path (seconds for this one); the NFA simulation
    // adds each state at most once per character. Counted, not timed: the bench times things.
    expect(re.work / 100).toBeLessThanOrEqual(re.states * (path.length + 1));
  });

  const modulePaths = (layers: number) =>
    Array.from({ length: layers }, (_, i) => ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"].map((m) => `model.layers.${i}.${m}`)).flat();

  it("patterns people write stay below the work limit on an 80-layer model", () => {
    const written = [
      ".*\\.(q_proj|v_proj)",
      ".*layers\\.(1[6-9]|2[0-9]|3[01])\\..*(q_proj|v_proj)",
      // The shape of the patterns unsloth writes into adapter_config.json.
      "(?:.*?(?:vision|image|visual|patch|language|text).*?(?:self_attn|attention|attn|mlp|feed_forward|ffn|dense).*?(?:k_proj|v_proj|q_proj|out_proj|fc1|fc2|o_proj|gate_proj|up_proj|down_proj).*?)|(?:\\bmodel\\.layers\\.[\\d]{1,}\\.(?:self_attn|attention|attn|mlp|feed_forward|ffn|dense)\\.(?:(?:k_proj|v_proj|q_proj|out_proj|fc1|fc2|o_proj|gate_proj|up_proj|down_proj)))",
      `model\\.layers\\.(?:${Array.from({ length: 80 }, (_, i) => i).join("|")})\\.(?:self_attn\\.(?:q|k|v|o)_proj|mlp\\.(?:gate|up|down)_proj)`,
    ];
    for (const pattern of written) {
      const re = new LinearRegex(pattern);
      for (const path of modulePaths(80)) re.fullMatch(path);
      expect(re.work).toBeLessThan(0.6 * MAX_MATCH_WORK);
    }
  });

  it("the worst program the limits allow is refused once its matches pass the work limit", () => {
    // Nearly every state live at every character: 1000 optional `.` copies, any of them next.
    const re = new LinearRegex("(?:.?){100}".repeat(10));
    expect(re.states).toBeGreaterThan(2000);
    const err = errorOf(() => {
      for (const path of modulePaths(80)) re.fullMatch(path);
    });
    expect(err.message).toContain(`more than ${MAX_MATCH_WORK} state visits`);
    expect(re.work).toBeLessThan(MAX_MATCH_WORK + 2 * re.states);
  });
});
