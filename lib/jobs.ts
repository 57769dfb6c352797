/**
 * @module
 * A job is one client request on its way to a backend. Its state changes only through the
 * transition table below; an illegal move is a bug and throws.
 */
import type { Answer } from "./answer.ts";
import type { ApiError } from "./errors.ts";
import type { Priority } from "./priority.ts";
import type { TokenUsage } from "./usage.ts";

export type JobState = "queued" | "running" | "done" | "failed" | "cancelled" | "dead";

const NEXT: Record<JobState, readonly JobState[]> = {
  queued: ["running", "failed", "cancelled"],
  // running → queued is a retry after the backend failed before sending a byte; running →
  // dead is the last retry failing (a dead letter).
  running: ["queued", "done", "failed", "cancelled", "dead"],
  done: [],
  failed: [],
  cancelled: [],
  dead: [],
};

/**
 * What the route receives: the backend's answer (a CompleteAnswer when it was read whole, a
 * StreamAnswer whose chunks are still coming) or an error.
 */
export type JobOutcome =
  | { kind: "response"; response: Answer }
  | { kind: "error"; error: ApiError };

export interface JobInit {
  id: string;
  model: string;
  method: string;
  /** Path and query as the client sent them, e.g. `/v1/chat/completions`. */
  path: string;
  body: Uint8Array<ArrayBuffer>;
  headers: Headers;
  stream: boolean;
  priority: Priority;
  /** Name of the API key it came with, or null (no keys configured). */
  owner?: string | null;
  /** Let a running request finish when its client leaves (model's `on_disconnect: finish`). */
  finishOnDisconnect?: boolean;
  enqueuedAt: number;
}

let nextSeq = 0;

/** Told of a job's state changes (the store's journal): one function serves every job. */
export type JobObserver = (job: Job, from: JobState) => void;
/** Told when a job is cancelled or expires (the queue): one function serves every job. */
export type CancelHook = (job: Job) => void;

export class Job {
  readonly id: string;
  readonly model: string;
  readonly method: string;
  readonly path: string;
  readonly stream: boolean;
  readonly priority: Priority;
  readonly owner: string | null;
  readonly finishOnDisconnect: boolean;
  readonly enqueuedAt: number;
  /** Arrival order; a retried job keeps its place. */
  readonly seq = nextSeq++;
  readonly outcome: Promise<JobOutcome>;
  attempts = 0;
  startedAt: number | null = null;
  /** Milliseconds spent swapping models on this job's behalf. */
  swapMs = 0;
  /** Token counts the backend reported, once its answer ended. */
  usage: TokenUsage | null = null;
  /** When the client went away (the dispatcher's clock), or null while it is there. */
  clientLeftAt: number | null = null;
  /** Events (OpenAI's "chunks") of the backend's streamed answer that went out to the client. */
  chunksSent = 0;
  // One controller for both causes (cancel, expire) and plain callbacks for the queue: a
  // combined signal or an event listener costs ~0.6 KB per waiting job and showed in the
  // per-request profile. Only per-job sources: a combined signal stays referenced by its
  // sources, so a long-lived source would keep every job (and its body) alive forever.
  // A waiting job holds little (10,000 may wait): the controller is made when the signal is
  // first asked for (forwarding), a hook list when its first hook comes, and the queue's and
  // the journal's hooks are one function each for all jobs, not a closure per job. Together
  // ~550 bytes less per waiting job.
  #cancel: AbortController | null = null;
  #cancelled = false;
  #cancelReason: unknown = undefined;
  #state: JobState = "queued";
  #onFinished: (() => void)[] | null = null;
  #observers: JobObserver[] | null = null;
  #resolve!: (outcome: JobOutcome) => void;
  #timedOut = false;
  #onCancel: CancelHook[] | null = null;
  #settled = false;
  // The request as the client sent it, let go once the job is settled: nothing forwards it
  // again then, and a stream's prompt (tens of KB, counted in max_queued_bytes) would otherwise
  // stay for as long as its answer streams.
  #body: Uint8Array<ArrayBuffer> | null;
  #headers: Headers | null;
  #onRequestReleased: (() => void)[] | null = null;

  constructor(init: JobInit) {
    this.id = init.id;
    this.model = init.model;
    this.method = init.method;
    this.path = init.path;
    this.#body = init.body;
    this.#headers = init.headers;
    this.stream = init.stream;
    this.priority = init.priority;
    this.owner = init.owner ?? null;
    this.finishOnDisconnect = init.finishOnDisconnect ?? false;
    this.enqueuedAt = init.enqueuedAt;
    this.outcome = new Promise((resolve) => this.#resolve = resolve);
  }

  /** The request's body. @throws {Error} once the request was let go (`onRequestReleased`). */
  get body(): Uint8Array<ArrayBuffer> {
    return this.#body ?? this.#released();
  }

  /** The request's headers. @throws {Error} once the request was let go (`onRequestReleased`). */
  get headers(): Headers {
    return this.#headers ?? this.#released();
  }

  #released(): never {
    throw new Error(`Job ${this.id}: its request was let go (the job was settled or finished)`);
  }

  /**
   * Runs `fn` once the job's request is let go: when the job is settled (the backend answered:
   * a stream's first bytes, a whole answer once read; or it failed) or reaches a final state,
   * whichever comes first; at once if it was.
   */
  onRequestReleased(fn: () => void): void {
    if (this.#body === null) fn();
    else if (this.#onRequestReleased === null) this.#onRequestReleased = [fn];
    else this.#onRequestReleased.push(fn);
  }

  #releaseRequest(): void {
    if (this.#body === null) return;
    this.#body = null;
    this.#headers = null;
    const hooks = this.#onRequestReleased;
    this.#onRequestReleased = null;
    if (hooks !== null) { for (const fn of hooks) fn(); }
  }

  /** Aborts when the job is cancelled (client gone, shutdown) or `request_timeout` passes. */
  get signal(): AbortSignal {
    if (this.#cancel === null) {
      this.#cancel = new AbortController();
      if (this.#cancelled) this.#cancel.abort(this.#cancelReason);
    }
    return this.#cancel.signal;
  }

  /** Whether the job was cancelled or expired (its signal aborted), without making the signal. */
  get cancelled(): boolean {
    return this.#cancelled;
  }

  /** What `cancel()` was given (an operator's ApiError, shutdown's), or undefined. */
  get cancelReason(): unknown {
    return this.#cancelReason;
  }

  get state(): JobState {
    return this.#state;
  }

  get settled(): boolean {
    return this.#settled;
  }

  /** @throws {Error} on a move the table does not allow. */
  transition(to: JobState): void {
    if (!NEXT[this.#state].includes(to)) {
      throw new Error(`Job ${this.id}: illegal state change ${this.#state} -> ${to}`);
    }
    const from = this.#state;
    this.#state = to;
    if (this.#observers !== null) { for (const observe of this.#observers) observe(this, from); }
    if (NEXT[to].length > 0) return;
    this.#releaseRequest();
    const finished = this.#onFinished;
    this.#onFinished = null;
    if (finished !== null) { for (const fn of finished) fn(); }
  }

  /** Whether `request_timeout` passed (told apart from a cancellation by its client). */
  get timedOut(): boolean {
    return this.#timedOut;
  }

  /** Cancels the job wherever it is: dropped if queued, its upstream request aborted if running. */
  cancel(reason?: unknown): void {
    if (this.#cancelled) return;
    this.#cancelled = true;
    this.#cancelReason = reason;
    this.#cancel?.abort(reason);
    const hooks = this.#onCancel;
    this.#onCancel = null;
    if (hooks !== null) { for (const fn of hooks) fn(this); }
  }

  /** `request_timeout` passed: cancels the job, which then counts as timed out. */
  expire(): void {
    // A job its client already left stays cancelled (499), not timed out.
    if (this.#cancelled) return;
    this.#timedOut = true;
    this.cancel(new DOMException("The request timed out", "TimeoutError"));
  }

  /**
   * Calls `fn` with this job once, right after it is cancelled or expires (the queue drops it
   * then); at once if that already happened. `offCancel(fn)` forgets it.
   */
  onCancel(fn: CancelHook): void {
    if (this.#cancelled) return fn(this);
    if (this.#onCancel === null) this.#onCancel = [fn];
    else this.#onCancel.push(fn);
  }

  /** Forgets a function given to `onCancel()`. */
  offCancel(fn: CancelHook): void {
    const at = this.#onCancel?.indexOf(fn) ?? -1;
    if (at >= 0) this.#onCancel!.splice(at, 1);
  }

  /**
   * The client left at `at`. A waiting job is dropped; a running one is cancelled (its
   * upstream request aborted) unless its model asks to let requests finish.
   */
  clientGone(at: number): void {
    this.clientLeftAt ??= at;
    if (this.#state === "running" && this.finishOnDisconnect) return;
    this.cancel();
  }

  /** Calls `fn` with this job and its previous state after every change (the store's journal). */
  observe(fn: JobObserver): void {
    if (this.#observers === null) this.#observers = [fn];
    else this.#observers.push(fn);
  }

  /** Runs `fn` once the job reaches a final state (done, failed, cancelled, dead). */
  onFinished(fn: () => void): void {
    if (NEXT[this.#state].length === 0) fn();
    else if (this.#onFinished === null) this.#onFinished = [fn];
    else this.#onFinished.push(fn);
  }

  /** Hands the outcome to the waiting route; only the first call counts. */
  settle(outcome: JobOutcome): boolean {
    if (this.#settled) return false;
    this.#settled = true;
    this.#resolve(outcome);
    this.#releaseRequest();
    return true;
  }
}
