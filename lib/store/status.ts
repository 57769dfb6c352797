/**
 * @module
 * Whether the store answers. A failed write marks it down; new requests then get 503 at once
 * instead of each waiting for a timeout, and a ping every second brings it back.
 */
import { ApiError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { JobStore } from "./contract.ts";
import { StoreUnavailableError } from "./contract.ts";

export class StoreStatus {
  readonly #store: JobStore;
  readonly #log: Logger;
  readonly #retryMs: number;
  #error: StoreUnavailableError | null = null;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #onUp: (() => void)[] = [];
  #closed = false;

  constructor(store: JobStore, log: Logger, retryMs = 1000) {
    this.#store = store;
    this.#log = log;
    this.#retryMs = retryMs;
  }

  get up(): boolean {
    return this.#error === null;
  }

  /** Why the store is down, or null. */
  get error(): StoreUnavailableError | null {
    return this.#error;
  }

  /** Runs `fn` each time the store comes back. */
  onUp(fn: () => void): void {
    this.#onUp.push(fn);
  }

  /** A store call failed: remember why, and start pinging until it answers again. */
  down(cause: unknown): StoreUnavailableError {
    const error = cause instanceof StoreUnavailableError
      ? cause
      : new StoreUnavailableError(this.#store.name, cause);
    if (this.#error === null) {
      this.#log.warn("store_unreachable", { store: this.#store.name, error: error.message });
    }
    this.#error = error;
    this.#schedulePing();
    return error;
  }

  /**
   * Runs store calls, failing fast while the store is down and marking it down when a call
   * fails. A client error (ApiError, e.g. a bad file) passes through untouched.
   */
  async run<T>(call: () => Promise<T>): Promise<T> {
    if (this.#error !== null) throw this.#error;
    try {
      return await call();
    } catch (err) {
      if (err instanceof ApiError) throw err;
      throw this.down(err);
    }
  }

  close(): void {
    this.#closed = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
  }

  #schedulePing(): void {
    if (this.#timer !== null || this.#closed) return;
    this.#timer = setTimeout(async () => {
      this.#timer = null;
      try {
        await this.#store.ping();
      } catch (err) {
        this.#error = new StoreUnavailableError(this.#store.name, err);
        return this.#schedulePing();
      }
      this.#error = null;
      this.#log.info("store_reachable", { store: this.#store.name });
      for (const fn of this.#onUp) fn();
    }, this.#retryMs);
  }
}
