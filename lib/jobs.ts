/**
 * @module
 * A job is one client request on its way to a backend. Its state changes only through the
 * transition table below; an illegal move is a bug and throws.
 */
import type { ApiError } from "./errors.ts";
import type { Priority } from "./priority.ts";
import type { TokenUsage } from "./usage.ts";
import type { EventStream } from "./upstream.ts";

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
 * What the route receives: the backend's response (body still streaming) or an error. An event
 * stream comes as `events` too, which the relay reads instead of `response.body`.
 */
export type JobOutcome =
  | { kind: "response"; response: Response; events?: EventStream | null }
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

export class Job {
  readonly id: string;
  readonly model: string;
  readonly method: string;
  readonly path: string;
  readonly body: Uint8Array<ArrayBuffer>;
  readonly headers: Headers;
  readonly stream: boolean;
  readonly priority: Priority;
  readonly owner: string | null;
  readonly finishOnDisconnect: boolean;
  readonly enqueuedAt: number;
  /** Aborts when the job is cancelled (client gone, shutdown) or `request_timeout` passes. */
  readonly signal: AbortSignal;
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
  // Only per-job sources: a combined signal stays referenced by its sources, so a
  // long-lived source would keep every job (and its body) alive forever.
  readonly #cancel = new AbortController();
  #state: JobState = "queued";
  #onFinished: (() => void)[] = [];
  #observers: ((from: JobState) => void)[] = [];
  #resolve!: (outcome: JobOutcome) => void;
  #timedOut = false;
  #onCancel: (() => void)[] = [];
  #settled = false;

  constructor(init: JobInit) {
    this.id = init.id;
    this.model = init.model;
    this.method = init.method;
    this.path = init.path;
    this.body = init.body;
    this.headers = init.headers;
    this.stream = init.stream;
    this.priority = init.priority;
    this.owner = init.owner ?? null;
    this.finishOnDisconnect = init.finishOnDisconnect ?? false;
    this.enqueuedAt = init.enqueuedAt;
    // One controller for both causes (cancel, expire) and plain callbacks for the queue: a
    // combined signal or an event listener costs ~0.6 KB per waiting job and showed in the
    // per-request profile.
    this.signal = this.#cancel.signal;
    this.outcome = new Promise((resolve) => this.#resolve = resolve);
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
    for (const observe of this.#observers) observe(from);
    if (NEXT[to].length === 0) { for (const fn of this.#onFinished.splice(0)) fn(); }
  }

  /** Whether `request_timeout` passed (told apart from a cancellation by its client). */
  get timedOut(): boolean {
    return this.#timedOut;
  }

  /** Cancels the job wherever it is: dropped if queued, its upstream request aborted if running. */
  cancel(reason?: unknown): void {
    if (this.signal.aborted) return;
    this.#cancel.abort(reason);
    for (const fn of this.#onCancel.splice(0)) fn();
  }

  /** `request_timeout` passed: cancels the job, which then counts as timed out. */
  expire(): void {
    // A job its client already left stays cancelled (499), not timed out.
    if (this.signal.aborted) return;
    this.#timedOut = true;
    this.cancel(new DOMException("The request timed out", "TimeoutError"));
  }

  /**
   * Calls `fn` once, right after the job is cancelled or expires (the queue drops it then);
   * returns a function that forgets `fn`.
   */
  onCancel(fn: () => void): () => void {
    if (this.signal.aborted) {
      fn();
      return () => {};
    }
    this.#onCancel.push(fn);
    return () => {
      const at = this.#onCancel.indexOf(fn);
      if (at >= 0) this.#onCancel.splice(at, 1);
    };
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

  /** Calls `fn` with the previous state after every change (the store's journal). */
  observe(fn: (from: JobState) => void): void {
    this.#observers.push(fn);
  }

  /** Runs `fn` once the job reaches a final state (done, failed, cancelled, dead). */
  onFinished(fn: () => void): void {
    if (NEXT[this.#state].length === 0) fn();
    else this.#onFinished.push(fn);
  }

  /** Hands the outcome to the waiting route; only the first call counts. */
  settle(outcome: JobOutcome): boolean {
    if (this.#settled) return false;
    this.#settled = true;
    this.#resolve(outcome);
    return true;
  }
}
