/**
 * @module
 * `max_queued_bytes`: a bound on the request bodies the proxy holds in memory at once (being
 * read, waiting in the queue, sent until the backend answers: a streaming answer does not need
 * its prompt), so clients that send big bodies, or declare them and
 * stall, cannot take the memory a model needs (on a unified-memory box it is the GPU's).
 * One key may hold at most its `max_queue_share` of it. Counted as bytes arrive, never ahead.
 */
import { queuedBytesFull, queuedBytesShareFull } from "./errors.ts";
import { MemoryRelease } from "./memory_release.ts";

export class ByteBudget {
  #limit: number;
  #perOwner: number;
  #held = 0;
  readonly #owned = new Map<string, number>();
  readonly #retryAfterS: () => number;
  /** Told when body memory becomes garbage, so it is collected soon. */
  readonly memory: MemoryRelease;

  constructor(
    limit: number,
    ownerShare: number,
    retryAfterS: () => number,
    memory = new MemoryRelease(),
  ) {
    this.#limit = limit;
    this.#perOwner = Math.floor(limit * ownerShare);
    this.#retryAfterS = retryAfterS;
    this.memory = memory;
  }

  /** Bytes held right now. */
  get held(): number {
    return this.#held;
  }

  get limit(): number {
    return this.#limit;
  }

  /** New limits from a reloaded config; bytes already held stay held. */
  reconfigure(limit: number, ownerShare: number): void {
    this.#limit = limit;
    this.#perOwner = Math.floor(limit * ownerShare);
  }

  /** A tally for one request's body; `owner` is its API key's name (null: no keys). */
  hold(owner: string | null): BodyHold {
    return new BodyHold(this, owner);
  }

  /** @throws {ApiError} 429 when `bytes` more would pass the limit or the owner's share. */
  take(bytes: number, owner: string | null): void {
    if (this.#held + bytes > this.#limit) throw queuedBytesFull(this.#limit, this.#retryAfterS());
    if (owner !== null) {
      const owned = (this.#owned.get(owner) ?? 0) + bytes;
      if (owned > this.#perOwner) {
        throw queuedBytesShareFull(owner, this.#perOwner, this.#retryAfterS());
      }
      this.#owned.set(owner, owned);
    }
    this.#held += bytes;
  }

  give(bytes: number, owner: string | null): void {
    this.#held -= bytes;
    if (owner === null) return;
    const owned = (this.#owned.get(owner) ?? 0) - bytes;
    if (owned > 0) this.#owned.set(owner, owned);
    else this.#owned.delete(owner);
  }
}

/** What one request's body holds of the budget; `release()` gives all of it back, once. */
export class BodyHold {
  #bytes = 0;

  constructor(readonly budget: ByteBudget, readonly owner: string | null) {}

  /** @throws {ApiError} 429 (see ByteBudget.take). */
  take(bytes: number): void {
    this.budget.take(bytes, this.owner);
    this.#bytes += bytes;
  }

  give(bytes: number): void {
    this.budget.give(bytes, this.owner);
    this.#bytes -= bytes;
  }

  copied(bytes: number): void {
    this.budget.memory.freshGarbage(bytes);
  }

  /** The body is done with: its bytes are garbage now, the one moment worth a full collection. */
  release(): void {
    this.budget.memory.heldGarbage(this.#bytes);
    this.give(this.#bytes);
  }
}
