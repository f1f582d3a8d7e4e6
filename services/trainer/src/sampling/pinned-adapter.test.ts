import { describe, expect, it } from "vitest";
import { Status } from "#core/grpc/adapter.ts";
import { AdapterIgnoredError } from "./errors.ts";
import { adapterSelection, checkPinned } from "./pinned-adapter.ts";

describe("pinned adapters", () => {
  it("writes the base expert as the contract's BaseExpert and any other version by name", () => {
    expect(adapterSelection("")).toEqual({ choice: { case: "base", value: {} } });
    expect(adapterSelection("aae7feef24e4803a")).toEqual({ choice: { case: "version", value: "aae7feef24e4803a" } });
  });

  it("accepts the adapter the request named and refuses another with FAILED_PRECONDITION naming the endpoint and both adapters", () => {
    expect(() => checkPinned("", "", "127.0.0.1:1", "a trajectory")).not.toThrow();
    expect(() => checkPinned("v1", "v1", "127.0.0.1:1", "a trajectory")).not.toThrow();
    let caught: unknown;
    try {
      checkPinned("v1", "", "replica-a", "the evaluation of problem p7");
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(AdapterIgnoredError);
    const err = caught as AdapterIgnoredError;
    expect(err.code).toBe(Status.FAILED_PRECONDITION);
    expect(err.message).toBe(
      "inference endpoint replica-a answered the evaluation of problem p7 with the base expert, but the request named adapter v1; " +
        "the endpoint does not honour the request's adapter field (AdapterSelection), so it cannot serve runs that share it",
    );
    expect(() => checkPinned("", "v2", "replica-a", "x")).toThrow(/answered x with adapter v2, but the request named the base expert/);
  });
});
