/**
 * @module
 * Time as a dependency, so pure logic (scheduler, queue ages) is tested with a fixed `now`.
 */

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };
