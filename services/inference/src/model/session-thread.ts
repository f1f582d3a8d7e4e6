// ONNX Runtime sessions on a worker thread of their own. onnxruntime-node 1.30 runs
// session.run on the calling thread, so a model step run on the service's main thread held
// its event loop for the whole step (1.5 s at 64 streams of the 0.5B-shaped pair on 2 cores):
// no gRPC message, health check or scrape was answered meanwhile. Here the step runs on the
// session's thread and the main thread only waits for its answer.
//
// What crosses the thread boundary: each run's outputs are transferred (their buffers change
// owner, nothing is copied), and so are the feeds' buffers the caller lends for the run (the
// batch's KV, hundreds of MB, and the step's own token arrays); they come back with the answer,
// as new ArrayBuffer objects the caller re-attaches (BatchKv.adopt). The other feeds (LoRA
// factors an adapter keeps for many steps) are copied, a few MB a step at most.
// onnxruntime-node refuses tensors on SharedArrayBuffers ("Invalid argument"), hence the lending.
//
// The thread runs plain JavaScript with onnxruntime-node alone, no TypeScript loader (a thread
// that loaded this project's modules through tsx took 34 MiB), and every session of the
// process shares it.
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import type * as ort from "onnxruntime-node";

/** What the runtime uses of a session, wherever it runs. */
export type OrtSession = Pick<ort.InferenceSession, "inputNames" | "outputNames" | "inputMetadata" | "outputMetadata" | "release">;

/** A tensor as it crosses the boundary. */
export interface PlainTensor {
  type: ort.Tensor.Type;
  dims: readonly number[];
  data: ort.Tensor.DataType;
}

type Request =
  | { kind: "create"; model: string | Uint8Array; options: ort.InferenceSession.SessionOptions }
  | { kind: "run"; feeds: Record<string, PlainTensor>; fetches: string[]; lent: ArrayBuffer[] }
  | { kind: "endProfiling" | "release" };

interface Answer {
  id: number;
  ok?: unknown;
  error?: string;
  /** The lent buffers, back in the order they were lent (also after a failed run). */
  lent?: ArrayBuffer[];
}

/** The thread's code: the process's sessions by id, one request at a time in the order they arrive. */
const THREAD_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const ort = require(workerData.onnxruntime);
const sessions = new Map();
const unique = (buffers) => [...new Set(buffers)];
async function handle(session, m) {
  if (m.kind === "create") {
    const created = await ort.InferenceSession.create(m.model, m.options);
    sessions.set(session, created);
    const { inputNames, outputNames, inputMetadata, outputMetadata } = created;
    return { ok: { inputNames, outputNames, inputMetadata, outputMetadata } };
  }
  const target = sessions.get(session);
  if (!target) throw new Error("no session " + session + " on this thread");
  if (m.kind === "run") {
    const feeds = {};
    for (const [name, f] of Object.entries(m.feeds)) feeds[name] = new ort.Tensor(f.type, f.data, f.dims);
    const results = await target.run(feeds, m.fetches);
    const outputs = {};
    for (const [name, t] of Object.entries(results)) outputs[name] = { type: t.type, dims: t.dims, data: t.data };
    return { ok: outputs, transfer: Object.values(outputs).map((t) => t.data.buffer) };
  }
  if (m.kind === "endProfiling") return { ok: target.endProfiling() };
  if (m.kind === "release") {
    sessions.delete(session);
    await target.release();
    return { ok: null };
  }
  throw new Error("unknown request " + m.kind);
}
let queue = Promise.resolve();
parentPort.on("message", ({ id, session, request }) => {
  queue = queue.then(async () => {
    const lent = request.kind === "run" ? request.lent : [];
    try {
      const { ok, transfer = [] } = await handle(session, request);
      parentPort.postMessage({ id, ok, lent }, unique([...lent, ...transfer]));
    } catch (err) {
      parentPort.postMessage({ id, error: String(err && err.message ? err.message : err), lent }, unique(lent));
    }
  });
});
`;

const onnxruntimePath = () => createRequire(import.meta.url).resolve("onnxruntime-node");

export class SessionThreadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SessionThreadError";
  }
}

/** ONNX Runtime failed a run; the lent buffers are back all the same. */
export class SessionRunError extends Error {
  constructor(
    message: string,
    readonly lent: ArrayBuffer[],
  ) {
    super(message);
    this.name = "SessionRunError";
  }
}

/** The process's model thread: started with its first session, stopped after its last. */
class ModelThread {
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (answer: Answer) => void; reject: (err: Error) => void }>();
  private failure: Error | null = null;
  private sessions = 0;
  private readonly worker = new Worker(THREAD_SOURCE, { eval: true, workerData: { onnxruntime: onnxruntimePath() } });

  constructor() {
    // The thread never keeps a process alive on its own (a CLI that is done exits).
    this.worker.unref();
    this.worker.on("message", (answer: Answer) => this.pending.get(answer.id)?.resolve(answer));
    // A thread that dies takes its sessions with it: every call from then on fails with why.
    // With sessions still open the process can no longer serve them (and their batch buffers
    // went with the thread), so the failure is thrown where nothing catches it: the process
    // exits and whatever supervises it starts a fresh one, rather than a server reporting
    // SERVING that fails every step.
    const fail = (err: Error) => {
      if (this.failure) return;
      this.failure = new SessionThreadError(`the ONNX Runtime sessions' thread stopped: ${err.message}`);
      for (const { reject } of [...this.pending.values()]) reject(this.failure);
      if (current === this) current = null;
      if (this.sessions > 0) {
        const fatal = this.failure;
        setImmediate(() => {
          throw fatal;
        });
      }
    };
    this.worker.on("error", fail);
    this.worker.on("exit", (code) => fail(new Error(`exit code ${code}`)));
  }

  static join(): ModelThread {
    current ??= new ModelThread();
    current.sessions++;
    return current;
  }

  async leave(): Promise<void> {
    if (--this.sessions > 0) return;
    if (current === this) current = null;
    await this.worker.terminate();
  }

  call(session: number, request: Request, transfer: ArrayBuffer[] = []): Promise<Answer> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise<Answer>((resolve, reject) => {
      // Referenced while an answer is awaited, so a process waiting for one does not exit.
      const settle = () => {
        this.pending.delete(id);
        if (this.pending.size === 0) this.worker.unref();
      };
      this.pending.set(id, { resolve: (answer) => (settle(), resolve(answer)), reject: (err) => (settle(), reject(err)) });
      this.worker.ref();
      try {
        this.worker.postMessage({ id, session, request }, transfer);
      } catch (err) {
        settle();
        reject(err as Error);
      }
    });
  }
}

let current: ModelThread | null = null;
let nextSession = 0;

/**
 * A session on the process's model thread (one for every session, not one each: a thread's
 * JavaScript heap and glibc malloc arena cost resident memory, and the service runs its models
 * one after the other anyway); run() waits without holding the caller's event loop.
 */
export class SessionThread implements OrtSession {
  private released = false;
  inputNames: readonly string[] = [];
  outputNames: readonly string[] = [];
  inputMetadata: readonly ort.InferenceSession.ValueMetadata[] = [];
  outputMetadata: readonly ort.InferenceSession.ValueMetadata[] = [];

  private constructor(
    private readonly thread: ModelThread,
    private readonly id: number,
  ) {}

  /**
   * Opens `model` (a path, or a graph's bytes) with `options` on the model thread. Bytes that
   * fill their buffer are transferred, not copied (a graph decoded from F16/BF16 weights holds
   * them all): the caller's array is detached afterwards, so one that opens the same bytes
   * again passes a copy (execution-provider.ts CreateSession).
   */
  static async create(model: string | Uint8Array, options: ort.InferenceSession.SessionOptions): Promise<SessionThread> {
    const session = new SessionThread(ModelThread.join(), nextSession++);
    try {
      const whole = typeof model !== "string" && model.byteOffset === 0 && model.byteLength === model.buffer.byteLength;
      const meta = await session.call({ kind: "create", model, options }, whole ? [model.buffer as ArrayBuffer] : []);
      return Object.assign(session, meta as Pick<OrtSession, "inputNames" | "outputNames" | "inputMetadata" | "outputMetadata">);
    } catch (err) {
      await session.thread.leave();
      throw err;
    }
  }

  /**
   * Runs the session. The buffers in `lend` (feeds' buffers the caller gives up for the run)
   * are transferred to the thread and back; they are detached meanwhile and return as the
   * `lent` ArrayBuffers, in the same order, also when the run fails (SessionRunError.lent).
   * Every other feed is copied. The outputs' buffers belong to the caller.
   */
  async run(feeds: Record<string, ort.Tensor>, fetches: string[], lend: readonly ArrayBuffer[] = []): Promise<{ outputs: Record<string, PlainTensor>; lent: ArrayBuffer[] }> {
    const lending = new Set(lend);
    const plain: Record<string, PlainTensor> = {};
    for (const [name, t] of Object.entries(feeds)) {
      const data = t.data as ort.Tensor.DataType & { buffer: ArrayBufferLike; slice(): ort.Tensor.DataType };
      // A view of a buffer not lent is copied to exactly its length (a clone would copy the whole buffer).
      plain[name] = { type: t.type, dims: t.dims, data: lending.has(data.buffer as ArrayBuffer) ? data : data.slice() };
    }
    const copies = Object.values(plain).map((t) => (t.data as { buffer: ArrayBuffer }).buffer).filter((b) => !lending.has(b));
    const answer = await this.thread.call(this.id, { kind: "run", feeds: plain, fetches, lent: [...lend] }, [...new Set([...lend, ...copies])]);
    if (answer.error !== undefined) throw new SessionRunError(answer.error, answer.lent ?? []);
    return { outputs: answer.ok as Record<string, PlainTensor>, lent: answer.lent ?? [] };
  }

  /** Ends the trace that enableProfiling started; its file is written when this settles. */
  async endProfiling(): Promise<void> {
    await this.call({ kind: "endProfiling" });
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.call({ kind: "release" }).catch(() => {});
    await this.thread.leave();
  }

  /** A request other than run: its error is thrown as an Error with ONNX Runtime's message. */
  private async call(request: Exclude<Request, { kind: "run" }>, transfer: ArrayBuffer[] = []): Promise<unknown> {
    const answer = await this.thread.call(this.id, request, transfer);
    if (answer.error !== undefined) throw new Error(answer.error);
    return answer.ok;
  }
}
