// What every call goes through around its handler: a slot among the max_streams calls that
// may run the models at once, and one wrapper that turns engine errors into statuses
// (status.ts), counts every call by method and code, and logs how it ended.
import type { Logger } from "pino";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type { CallContext, ServiceHandlers } from "#core/grpc/adapter.ts";
import { GrpcError, Status } from "#core/grpc/adapter.ts";
import { CapacityError } from "#inference/engine/errors.ts";
import type { InferenceMetrics } from "#inference/metrics.ts";
import { asGrpcError, requestStatus, statusName } from "./status.ts";

/** Counts the calls that run the models; one more than the limit is refused. */
export class CallSlots {
  private active = 0;

  constructor(
    private readonly limit: number,
    private readonly onChange: (active: number) => void = () => {},
  ) {}

  get inUse(): number {
    return this.active;
  }

  /** Takes a slot (RESOURCE_EXHAUSTED when none is free); the returned function gives it back once. */
  acquire(): () => void {
    if (this.active >= this.limit) throw new CapacityError(`too many concurrent streams (limit ${this.limit}); retry later`);
    this.active++;
    this.onChange(this.active);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.active--;
      this.onChange(this.active);
    };
  }
}

/** The status a call ended with, when it ended because the client left or its deadline passed. */
function abortStatus(ctx: CallContext): Status | null {
  // The adapter already tells a deadline from a plain cancellation (core/grpc/server.ts).
  if (!ctx.signal.aborted) return null;
  return ctx.signal.reason instanceof GrpcError ? ctx.signal.reason.code : Status.CANCELLED;
}

/**
 * Wraps every handler of a service: engine errors become GrpcErrors at this one boundary,
 * and each call is counted (requests_total by method and code, errors_total by code) and
 * logged when it ends.
 */
export function instrumented<R extends GenServiceMethods>(service: GenService<R>, handlers: ServiceHandlers<R>, metrics: InferenceMetrics, logger: Logger): ServiceHandlers<R> {
  const wrapped: Record<string, unknown> = {};
  for (const [name, handler] of Object.entries(handlers as Record<string, (...args: unknown[]) => unknown>)) {
    wrapped[name] = async (...args: unknown[]) => {
      const ctx = args[args.length - 1] as CallContext;
      const started = performance.now();
      const method = `${service.name}/${service.methods.find((m) => m.localName === name)?.name ?? name}`;
      const ended = (code: Status, extra: Record<string, unknown> = {}) => {
        const codeName = statusName(code);
        metrics.requests.inc({ method, code: codeName });
        if (code !== Status.OK) metrics.errors.inc({ code: codeName });
        const level = code === Status.OK || code === Status.CANCELLED ? "debug" : "info";
        logger[level]({ method, code: codeName, ms: Math.round(performance.now() - started), peer: ctx.peer, ...extra }, "call ended");
      };
      try {
        const result = await handler(...args);
        // A handler may return normally after its client left (a half-close just before the reset).
        ended(abortStatus(ctx) ?? Status.OK);
        return result;
      } catch (err) {
        const aborted = abortStatus(ctx);
        if (aborted !== null) {
          ended(aborted);
          throw err;
        }
        const status = requestStatus(err);
        // Internal errors are logged in full by the adapter; the others are the client's to fix.
        ended(status.code, status.internal ? {} : { error: status.message, field: status.field || undefined });
        throw asGrpcError(err);
      }
    };
  }
  return wrapped as ServiceHandlers<R>;
}
