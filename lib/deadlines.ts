/**
 * @module
 * Deadlines that share one timer. Every request gets a `request_timeout` that is nearly always
 * cancelled a few milliseconds later; a timer of its own per request (setTimeout, then
 * clearTimeout) was ~1.3% of the proxy's CPU per request. Deadlines of one duration expire in
 * the order they were set (the clock is monotonic), so each duration keeps them in insertion
 * order and one timer waits for the earliest of all.
 */
// node:timers' Timeout, for ref() and unref(): the global setTimeout returns one too, but is
// typed as returning a number.
import { clearTimeout, setTimeout } from "node:timers";

interface Entry {
  readonly at: number;
  readonly fire: () => void;
}

export class Deadlines {
  /** Pending deadlines by duration, each in the order set, which is the order they expire in. */
  readonly #byDuration = new Map<number, Set<Entry>>();
  #pending = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;
  /** When the timer fires (performance.now()); Infinity with no timer. */
  #timerAt = Infinity;

  /**
   * Calls `fire` once `ms` have passed, unless the returned function is called first (calling
   * it later, or twice, does nothing). Like setTimeout, a pending deadline keeps the process
   * alive.
   */
  after(ms: number, fire: () => void): () => void {
    const entry: Entry = { at: performance.now() + ms, fire };
    let entries = this.#byDuration.get(ms);
    if (entries === undefined) {
      entries = new Set();
      this.#byDuration.set(ms, entries);
    }
    entries.add(entry);
    if (this.#pending++ === 0) this.#timer?.ref();
    if (entry.at < this.#timerAt) this.#arm(entry.at);
    const set = entries;
    return () => {
      // The timer is left to fire (it then finds nothing due): clearing and setting one per
      // request is what this module saves. Unref'd, it keeps no idle process alive.
      if (set.delete(entry) && --this.#pending === 0) this.#timer?.unref();
    };
  }

  #arm(at: number): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => this.#expire(), Math.max(0, at - performance.now()));
    if (this.#pending === 0) this.#timer.unref();
  }

  #expire(): void {
    this.#timer = null;
    this.#timerAt = Infinity;
    const now = performance.now();
    const due: Entry[] = [];
    let next = Infinity;
    for (const [ms, entries] of this.#byDuration) {
      for (const entry of entries) {
        if (entry.at > now) {
          next = Math.min(next, entry.at);
          break;
        }
        entries.delete(entry);
        this.#pending--;
        due.push(entry);
      }
      if (entries.size === 0) this.#byDuration.delete(ms);
    }
    // Armed before the callbacks run, so one that sets a deadline sees the timer in place.
    if (next !== Infinity) this.#arm(next);
    for (const entry of due) entry.fire();
  }
}
