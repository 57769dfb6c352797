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
  readonly #requests: RequestRecord[] = [];
  readonly #swaps: SwapRecord[] = [];
  readonly #listeners = new Set<() => void>();

  constructor(readonly keepRequests = 50, readonly keepSwaps = 30) {}

  request(record: RequestRecord): void {
    this.#push(this.#requests, record, this.keepRequests);
  }

  swap(record: SwapRecord): void {
    this.#push(this.#swaps, record, this.keepSwaps);
  }

  /** Newest first. */
  recentRequests(): readonly RequestRecord[] {
    return this.#requests;
  }

  /** Newest first. */
  recentSwaps(): readonly SwapRecord[] {
    return this.#swaps;
  }

  /** Subscribes to every new record; returns the unsubscribe function. */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #push<T>(list: T[], record: T, keep: number): void {
    list.unshift(record);
    if (list.length > keep) list.length = keep;
    for (const listener of this.#listeners) listener();
  }
}
