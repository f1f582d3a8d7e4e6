import { describe, expect, it } from "vitest";
import { answersEqual, extractAnswer, isCorrect, numbersIn, parseNumber, referenceAnswer } from "./answers.ts";

describe("parseNumber", () => {
  it.each([
    ["15", 15],
    ["15.0", 15],
    ["$15", 15],
    ["1,500", 1500],
    ["1,234,567", 1234567],
    [" -3.5 ", -3.5],
    ["-$7", -7],
    ["15.", 15],
    ["40%", 40],
    [".5", 0.5],
  ])("%j -> %d", (text, expected) => {
    expect(parseNumber(text)).toBe(expected);
  });

  it.each(["", "abc", "15 apples", "1,50", "3 4", "1,2,3", "--4", "#### 5"])("rejects %j", (text) => {
    expect(parseNumber(text)).toBeNull();
  });
});

describe("numbersIn", () => {
  it("reads signs only where they cannot be a binary minus", () => {
    expect(numbersIn("24 - 5 = 19")).toEqual([24, 5, 19]);
    expect(numbersIn("10-3=7")).toEqual([10, 3, 7]);
    expect(numbersIn("it dropped to -4 degrees")).toEqual([-4]);
  });
  it("keeps thousands groups and lists apart", () => {
    expect(numbersIn("1,2,3 and 12,345 and 1,2345")).toEqual([1, 2, 3, 12345, 1, 2345]);
  });
});

describe("referenceAnswer", () => {
  it("reads the number after the final marker", () => {
    expect(referenceAnswer("48/2 = <<48/2=24>>24\n#### 1,234")).toBe(1234);
    expect(referenceAnswer("#### 3\nmore\n#### -2.25")).toBe(-2.25);
  });
  it("is strict: a marker followed by exactly one number", () => {
    expect(referenceAnswer("no marker 72")).toBeNull();
    expect(referenceAnswer("#### 72 apples")).toBeNull();
    expect(referenceAnswer("#### ")).toBeNull();
  });
});

describe("extractAnswer", () => {
  it("takes the first number after the last marker, on its line", () => {
    expect(extractAnswer("3 * 4 = 12\n5 + 12 = 17\n#### 17")).toBe(17);
    expect(extractAnswer("#### 5\n#### $1,500 apples\n9 + 9 = 18")).toBe(1500);
  });
  it("gives null when the marker line has no number, rather than guessing", () => {
    expect(extractAnswer("3 + 4 = 7\n#### \n")).toBeNull();
    expect(extractAnswer("3 + 4 = 7\n####")).toBeNull();
  });
  it("falls back to the last number without a marker", () => {
    expect(extractAnswer("3 + 4 = 7\nso the answer is 7.")).toBe(7);
    expect(extractAnswer("she has 2,000 dollars")).toBe(2000);
    expect(extractAnswer("no numbers at all")).toBeNull();
    expect(extractAnswer("")).toBeNull();
  });
});

describe("isCorrect", () => {
  it("compares normalised numbers", () => {
    expect(isCorrect("#### 15.0", 15)).toBe(true);
    expect(isCorrect("#### $15", "15")).toBe(true);
    expect(isCorrect("the total is 1,500", 1500)).toBe(true);
    expect(isCorrect("#### 16", 15)).toBe(false);
    expect(isCorrect("no answer", 15)).toBe(false);
    expect(isCorrect("#### 0.30000000000000004", 0.3)).toBe(true);
  });
  it("accepts a GSM8K answer field as the reference", () => {
    expect(isCorrect("#### 72", "48+24 = <<48+24=72>>72\n#### 72")).toBe(true);
  });
  it("throws on an unreadable reference", () => {
    expect(() => isCorrect("#### 1", "seventy")).toThrow(/not a number/);
  });
  it("answersEqual is exact on integers", () => {
    expect(answersEqual(1000000, 1000001)).toBe(false);
    expect(answersEqual(-0, 0)).toBe(true);
  });
});
