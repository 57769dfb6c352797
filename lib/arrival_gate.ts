/**
 * @module
 * Lets a burst of new requests into the event loop a few per turn, so the streams already
 * running are not held up behind it.
 *
 * The proxy has one thread. When a thousand clients connect at once, their requests complete
 * their reads in the same few turns of the event loop, and each costs ~0.3 ms of parsing,
 * admission and dispatch: a turn then runs for tens of milliseconds, and every chunk a backend
 * sent meanwhile waits for it. With 1,000 streams opened at once their first chunks came 15-28
 * ms late at the median and 130-320 ms at p99, against 0.2-0.4 / 20-40 ms through a bare Deno
 * relay; paced by this gate they came 2-2.6 / 10-13 ms late.
 *
 * Requests that arrive a few per turn (any steady load) pass at once: the gate only holds
 * arrivals past `perTurn` in one turn, in arrival order, and lets `perTurn` more in on each
 * later turn (a timer's, so that the loop polled I/O in between). How many pass per turn
 * follows how late those turns come: halved when a turn came more than `lateMs` after the
 * quickest one seen (the loop is busy), one more when it came on time, so a burst is let in as
 * fast as the loop keeps up with the streams it already carries.
 */
import { setImmediate } from "node:timers";

/** How the gate sees the event loop; the real one by default, a fake in tests. */
export interface Turns {
  now(): number;
  /** Runs `fn` once the work in hand is done, before the loop waits for I/O again. */
  soon(fn: () => void): void;
  /** Runs `fn` on a later turn, after the loop polled I/O (a timer). */
  later(fn: () => void): void;
}

const eventLoop: Turns = {
  now: () => performance.now(),
  soon: (fn) => void setImmediate(fn),
  later: (fn) => void setTimeout(fn, 0),
};

export interface ArrivalGateOptions {
  /** Arrivals passed per turn at first, and the most ever. */
  perTurn: number;
  maxPerTurn: number;
  /**
   * A turn this much later than the quickest seen means the loop is busy: fewer per turn. (A
   * zero timer takes ~2 ms on an idle Deno; that much is the timer's own.)
   */
  lateMs: number;
}

const DEFAULTS: ArrivalGateOptions = { perTurn: 4, maxPerTurn: 32, lateMs: 1 };

export class ArrivalGate {
  readonly #turns: Turns;
  readonly #options: ArrivalGateOptions;
  /** Held arrivals, in arrival order. */
  readonly #waiting: (() => void)[] = [];
  #perTurn: number;
  #passed = 0;
  #resetting = false;
  /** When the next turn that lets waiters in was asked for; -1 when none is. */
  #askedAt = -1;
  /** The quickest a turn came after it was asked for: the timer's own delay. */
  #quickest = Infinity;

  constructor(options: ArrivalGateOptions = DEFAULTS, turns: Turns = eventLoop) {
    this.#options = options;
    this.#turns = turns;
    this.#perTurn = options.perTurn;
  }

  /** Arrivals held for a later turn. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /** How many pass per turn now. */
  get perTurn(): number {
    return this.#perTurn;
  }

  /** Null when the arrival may go on now; else a promise that settles when it may. */
  pass(): Promise<void> | null {
    if (this.waiting === 0 && this.#passed < this.#perTurn) {
      this.#passed++;
      if (!this.#resetting) {
        this.#resetting = true;
        this.#turns.soon(() => {
          this.#resetting = false;
          if (this.waiting === 0) this.#passed = 0;
        });
      }
      return null;
    }
    const wait = new Promise<void>((resolve) => this.#waiting.push(resolve));
    this.#askTurn();
    return wait;
  }

  #askTurn(): void {
    if (this.#askedAt >= 0) return;
    this.#askedAt = this.#turns.now();
    this.#turns.later(() => this.#letIn());
  }

  #letIn(): void {
    const after = this.#turns.now() - this.#askedAt;
    this.#askedAt = -1;
    this.#quickest = Math.min(this.#quickest, after);
    const late = after - this.#quickest > this.#options.lateMs;
    this.#perTurn = late
      ? Math.max(1, this.#perTurn >> 1)
      : Math.min(this.#options.maxPerTurn, this.#perTurn + 1);
    const letIn = this.#waiting.splice(0, this.#perTurn);
    if (this.waiting > 0) this.#askTurn();
    else this.#passed = 0;
    for (const resolve of letIn) resolve();
  }
}
