/**
 * @module
 * How long a request holds its backend: a moving average overall and per model. The
 * scheduler weighs a model's backlog with it, ETAs count turns in it, and Retry-After is
 * derived from it.
 */

/** Weight of the newest observation. */
const ALPHA = 0.2;

export class ServiceTimes {
  /** Before any request finished: a guess of 10 s. */
  #overallMs = 10_000;
  readonly #perModel = new Map<string, number>();

  /** The average over every model. */
  get overallMs(): number {
    return this.#overallMs;
  }

  /** The average of `model`, or the overall one before it served anything. */
  of(model: string): number {
    return this.#perModel.get(model) ?? this.#overallMs;
  }

  observe(model: string, ms: number): void {
    this.#overallMs += ALPHA * (ms - this.#overallMs);
    const mine = this.#perModel.get(model);
    this.#perModel.set(model, mine === undefined ? ms : mine + ALPHA * (ms - mine));
  }

  /** Seconds a refused client should wait: the queue's share per worker, 1 to 60. */
  retryAfterS(queued: number, workers: number): number {
    const perWorker = Math.ceil(queued / workers);
    return Math.min(60, Math.max(1, Math.ceil((this.#overallMs * perWorker) / 1000)));
  }
}
