/**
 * @module
 * Counters behind `/metrics`. Plain numbers owned by the worker pool; no I/O.
 */
import type { Clock } from "./clock.ts";

export class Metrics {
  readonly startedAt: number;
  totalRequests = 0;
  successfulRequests = 0;
  failedRequests = 0;
  cancelledRequests = 0;
  peakConcurrentRequests = 0;
  /** Jobs that failed after `max_attempts`. */
  deadLetters = 0;

  constructor(clock: Clock) {
    this.startedAt = clock.now();
  }

  observeConcurrency(inflight: number): void {
    this.peakConcurrentRequests = Math.max(this.peakConcurrentRequests, inflight);
  }

  /** Share of finished requests that succeeded; 1 before any request finished. */
  successRate(): number {
    const finished = this.successfulRequests + this.failedRequests + this.cancelledRequests;
    return finished === 0 ? 1 : this.successfulRequests / finished;
  }
}
