// One long-lived StreamTrajectories call carrying many trajectories at once: starts are
// written under their own request ids, the interleaved responses are handed to each id's
// handlers, and when the call ends (cleanly, by an error, or by a broken connection) the
// owner learns which ids were left unfinished, so it can send them elsewhere.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { GrpcError, Status, toGrpcError } from "#core/grpc/adapter.ts";
import type { BidiStreamingCall } from "#core/grpc/adapter.ts";
import type {
  StreamTrajectoriesRequestSchema,
  StreamTrajectoriesResponseSchema,
  TrajectoryFinished,
  TrajectoryRequestSchema,
  TrajectoryStarted,
  TrajectoryStep,
} from "#core/gen/lightreasoner/v1/inference_pb.ts";
import type { InferenceClient } from "./endpoint-pool.ts";

export interface TrajectoryHandlers {
  onStarted(started: TrajectoryStarted): void;
  onStep(step: TrajectoryStep): void;
  /** The last message of the id; the handlers are dropped after it. */
  onFinished(finished: TrajectoryFinished): void;
}

/** How the call ended: null for OK; the ids that never finished go back to the owner. */
export type CallClosed = (error: GrpcError | null, unfinished: string[]) => void;

export class TrajectoryCall {
  private readonly call: BidiStreamingCall<typeof StreamTrajectoriesRequestSchema, typeof StreamTrajectoriesResponseSchema>;
  private readonly open = new Map<string, TrajectoryHandlers>();
  private failure: GrpcError | null = null;
  private halfClosed = false;
  /** Epoch ms of the last message received (or of the start): a stalled call shows here. */
  lastActivity = Date.now();
  readonly closed: Promise<void>;

  constructor(client: InferenceClient, onClosed: CallClosed) {
    this.call = client.streamTrajectories();
    this.closed = this.read().then(() => onClosed(this.failure, [...this.open.keys()]));
  }

  get size(): number {
    return this.open.size;
  }

  get ended(): boolean {
    return this.halfClosed || this.failure !== null;
  }

  start(requestId: string, request: MessageInitShape<typeof TrajectoryRequestSchema>, handlers: TrajectoryHandlers): void {
    if (this.open.has(requestId)) throw new GrpcError(Status.INTERNAL, `request id ${requestId} is already open on this call`);
    this.open.set(requestId, handlers);
    this.send({ requestId, action: { case: "start", value: request } });
  }

  cancel(requestId: string): void {
    if (this.open.has(requestId)) this.send({ requestId, action: { case: "cancel", value: {} } });
  }

  /** Half-closes: the server finishes what is open, then ends the call. */
  end(): void {
    if (this.ended) return;
    this.halfClosed = true;
    this.call.end();
  }

  /** Ends the call at once with `reason`; every open id comes back unfinished. */
  abort(reason: GrpcError): void {
    this.failure ??= reason;
    this.call.cancel();
  }

  private send(message: MessageInitShape<typeof StreamTrajectoriesRequestSchema>): void {
    // A write that fails means the call is over; the read loop reports why.
    this.call.write(message).catch(() => {});
  }

  private async read(): Promise<void> {
    try {
      for await (const message of this.call) {
        this.lastActivity = Date.now();
        const handlers = this.open.get(message.requestId);
        if (!handlers) throw new GrpcError(Status.INTERNAL, `the server sent a message for request id ${JSON.stringify(message.requestId)}, which is not open on this call`);
        switch (message.event.case) {
          case "started":
            handlers.onStarted(message.event.value);
            break;
          case "step":
            handlers.onStep(message.event.value);
            break;
          case "finished":
            this.open.delete(message.requestId);
            handlers.onFinished(message.event.value);
            break;
          default:
            throw new GrpcError(Status.INTERNAL, `the server sent a message without an event for ${message.requestId}`);
        }
      }
      if (this.open.size > 0 && this.failure === null) {
        this.failure = new GrpcError(Status.UNAVAILABLE, `the server ended the call with ${this.open.size} trajectories unfinished`);
      }
    } catch (err) {
      this.failure ??= toGrpcError(err);
      this.call.cancel();
    }
  }
}
