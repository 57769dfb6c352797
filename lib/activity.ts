/**
 * @module
 * What happened lately, for the dashboard: the last finished requests and the last swaps
 * (loads, unloads, failures), newest first, with listeners for live updates. Bounded; no I/O.
 */
import type { KvOutcome } from "./kv_slots.ts";

export interface RequestRecord {
  id: string;
  model: string;
  /** e.g. `/v1/chat/completions`. */
  path: string;
  /** The API key's name, or null (no keys configured). */
  key: string | null;
  status: number;
  /** Why it failed (error code), if it did. */
  reason: string | null;
  stream: boolean;
  priority: string;
  /** Clock ms when it finished. */
  at: number;
  waitMs: number;
  swapMs: number;
  totalMs: number;
  promptTokens: number | null;
  completionTokens: number | null;
}

export interface SwapRecord {
  /** null: nothing was loaded. */
  from: string | null;
  /** null: an unload. */
  to: string | null;
  /** Clock ms when it ended. */
  at: number;
  ms: number;
  ok: boolean;
  /** Why it happened when not for a request: "unload", "idle", "preload", "admin"… */
  cause: string | null;
  error: string | null;
  /** Slot KV cache saved from the models it stopped, and restored into the one it started. */
  kvSaved?: Pick<KvOutcome, "tokens" | "ms"> | null;
  kvRestored?: Pick<KvOutcome, "tokens" | "ms"> | null;
}

export class Activity {
  readonly #requests: Ring<RequestRecord>;
  readonly #swaps: Ring<SwapRecord>;
  readonly #listeners = new Set<() => void>();

  constructor(readonly keepRequests = 50, readonly keepSwaps = 30) {
    this.#requests = new Ring(keepRequests);
    this.#swaps = new Ring(keepSwaps);
  }

  request(record: RequestRecord): void {
    this.#push(this.#requests, record);
  }

  swap(record: SwapRecord): void {
    this.#push(this.#swaps, record);
  }

  /** Newest first. */
  recentRequests(): readonly RequestRecord[] {
    return this.#requests.newestFirst();
  }

  /** Newest first. */
  recentSwaps(): readonly SwapRecord[] {
    return this.#swaps.newestFirst();
  }

  /** Subscribes to every new record; returns the unsubscribe function. */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #push<T>(ring: Ring<T>, record: T): void {
    ring.push(record);
    for (const listener of this.#listeners) listener();
  }
}

/**
 * The last `size` records, overwritten in place: every request adds one, and an array kept
 * newest-first by unshift and cut by length reallocated its store twice per request.
 */
class Ring<T> {
  readonly #slots: (T | undefined)[];
  #next = 0;
  #count = 0;

  constructor(readonly size: number) {
    this.#slots = new Array(size);
  }

  push(record: T): void {
    if (this.size === 0) return;
    this.#slots[this.#next] = record;
    this.#next = (this.#next + 1) % this.size;
    this.#count = Math.min(this.#count + 1, this.size);
  }

  newestFirst(): T[] {
    const out: T[] = [];
    for (let i = 1; i <= this.#count; i++) {
      out.push(this.#slots[(this.#next - i + this.size) % this.size]!);
    }
    return out;
  }
}
