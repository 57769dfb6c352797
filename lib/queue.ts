/**
 * @module
 * The waiting room: admission against `queue_size`, arrival order, and removal of jobs whose
 * client left or whose time ran out. It never talks to a backend.
 */
import { ApiError, clientClosed, queueFull, queueShareFull, requestTimeout } from "./errors.ts";
import type { CancelHook, Job } from "./jobs.ts";
import { WaitingJobs, type WaitingView } from "./waiting.ts";

export interface QueueHooks {
  /** A waiting job was cancelled (client gone, operator); `error` is what its client got. */
  onCancelled?(job: Job, error: ApiError): void;
  /** A waiting job hit `request_timeout`. */
  onTimedOut?(job: Job): void;
  /** The set of waiting jobs changed. */
  onChange?(): void;
}

export class JobQueue {
  #capacity: number;
  #timeoutS: number;
  readonly #hooks: QueueHooks;
  readonly #retryAfterS: () => number;
  readonly #waiting = new WaitingJobs<Job>();
  /** One hook for every waiting job: no closure or map entry per job. */
  readonly #abandoning: CancelHook = (job) => this.#abandon(job);
  readonly #listeners = new Set<() => void>();

  /** Most places one API key may hold, so one script cannot fill the whole queue. */
  #perOwner: number;
  readonly #owned = new Map<string, number>();
  /** Batch lines: they wait here too, but the store bounds them, not `queue_size`. */
  readonly #batchLines = new WeakSet<Job>();
  #waitingBatchLines = 0;

  constructor(
    capacity: number,
    options: {
      timeoutS: number;
      retryAfterS: () => number;
      /** Share of `capacity` one API key may hold (1: no limit). */
      ownerShare?: number;
      hooks?: QueueHooks;
    },
  ) {
    this.#capacity = capacity;
    this.#perOwner = Math.max(1, Math.floor(capacity * (options.ownerShare ?? 1)));
    this.#timeoutS = options.timeoutS;
    this.#retryAfterS = options.retryAfterS;
    this.#hooks = options.hooks ?? {};
  }

  get capacity(): number {
    return this.#capacity;
  }

  /** New limits from a reloaded config; jobs already waiting keep their places. */
  reconfigure(limits: { capacity: number; ownerShare: number; timeoutS: number }): void {
    this.#capacity = limits.capacity;
    this.#perOwner = Math.max(1, Math.floor(limits.capacity * limits.ownerShare));
    this.#timeoutS = limits.timeoutS;
  }

  /** Also calls `listener` whenever the waiting jobs change (dashboards); returns the unsubscribe. */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Waiting requests that count against `queue_size` (batch lines do not). */
  get size(): number {
    return this.#waiting.size - this.#waitingBatchLines;
  }

  /** Waiting jobs, indexed per model for the scheduler. */
  waiting(): WaitingView<Job> {
    return this.#waiting;
  }

  /** Waiting jobs in arrival order (views, not the hot path). */
  list(): Job[] {
    return this.#waiting.all();
  }

  /** The waiting job with this id, if any. */
  find(id: string): Job | undefined {
    return this.#waiting.all().find((job) => job.id === id);
  }

  /** How many jobs for the same model arrived before `job` and still wait. */
  aheadOf(job: Job): number {
    return this.#waiting.aheadOf(job);
  }

  /**
   * Adds a new job.
   * @throws {ApiError} 429 `queue_full` when `queue_size` jobs already wait.
   */
  admit(job: Job): void {
    if (this.size >= this.capacity) {
      throw queueFull(this.capacity, this.#retryAfterS());
    }
    if (job.owner !== null && (this.#owned.get(job.owner) ?? 0) >= this.#perOwner) {
      throw queueShareFull(job.owner, this.#perOwner, this.capacity, this.#retryAfterS());
    }
    this.#insert(job);
  }

  /** Adds a batch line, which `queue_size` and the per-key share do not limit. */
  admitBatchLine(job: Job): void {
    this.#batchLines.add(job);
    this.#insert(job);
  }

  /** Puts a job that was taken back in its arrival place (a retry); capacity does not apply. */
  requeue(job: Job): void {
    job.transition("queued");
    this.#insert(job);
  }

  /** Removes a job the dispatcher is about to run. */
  take(job: Job): void {
    this.#remove(job);
  }

  /** 1-based position in arrival order, or 0 when not waiting. */
  positionOf(job: Job): number {
    return this.#waiting.positionOf(job);
  }

  /** Fails every waiting job for `model` (its container will not come up). */
  failModel(model: string, error: ApiError): Job[] {
    const failed = this.#waiting.jobsOf(model);
    for (const job of failed) this.#fail(job, error);
    return failed;
  }

  /** Fails every waiting job (shutdown). */
  failAll(error: ApiError): Job[] {
    const failed = this.#waiting.all();
    for (const job of failed) this.#fail(job, error);
    return failed;
  }

  #fail(job: Job, error: ApiError): void {
    this.#remove(job);
    job.transition("failed");
    job.settle({ kind: "error", error });
  }

  #insert(job: Job): void {
    this.#waiting.add(job);
    if (this.#batchLines.has(job)) this.#waitingBatchLines++;
    if (job.owner !== null) this.#owned.set(job.owner, (this.#owned.get(job.owner) ?? 0) + 1);
    if (job.cancelled) return this.#abandon(job);
    job.onCancel(this.#abandoning);
    this.#changed();
  }

  #remove(job: Job): void {
    if (!this.#waiting.remove(job)) return;
    if (this.#batchLines.has(job)) this.#waitingBatchLines--;
    if (job.owner !== null) this.#owned.set(job.owner, this.#owned.get(job.owner)! - 1);
    job.offCancel(this.#abandoning);
    this.#changed();
  }

  #changed(): void {
    this.#hooks.onChange?.();
    for (const listener of this.#listeners) listener();
  }

  #abandon(job: Job): void {
    if (!this.#waiting.has(job)) return;
    this.#remove(job);
    if (job.timedOut) {
      job.transition("failed");
      job.settle({ kind: "error", error: requestTimeout(this.#timeoutS) });
      this.#hooks.onTimedOut?.(job);
    } else {
      job.transition("cancelled");
      // An operator's cancel carries the error its client should see.
      const reason = job.cancelReason;
      const error = reason instanceof ApiError ? reason : clientClosed();
      job.settle({ kind: "error", error });
      this.#hooks.onCancelled?.(job, error);
    }
  }
}
