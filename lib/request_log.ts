/**
 * @module
 * The end of every request, told once: its Prometheus series, its row on the dashboard's
 * activity list, and its log line (the fields the README documents).
 */
import type { Activity } from "./activity.ts";
import type { Clock } from "./clock.ts";
import type { Job } from "./jobs.ts";
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";

export class RequestLog {
  readonly #metrics: Metrics;
  readonly #activity: Activity;
  readonly #log: Logger;
  readonly #clock: Clock;

  constructor(deps: { metrics: Metrics; activity: Activity; log: Logger; clock: Clock }) {
    this.#metrics = deps.metrics;
    this.#activity = deps.activity;
    this.#log = deps.log;
    this.#clock = deps.clock;
  }

  /** Records a request that ended with `status`; `reason` counts it as a failure. */
  ended(job: Job, status: number, reason?: string): void {
    const now = this.#clock.now();
    const model = { model: job.model };
    this.#metrics.requests.inc({ ...model, status: String(status) });
    this.#metrics.requestSeconds.observe(model, (now - job.enqueuedAt) / 1000);
    if (job.startedAt !== null) {
      this.#metrics.queueWaitSeconds.observe(model, (job.startedAt - job.enqueuedAt) / 1000);
    }
    if (reason !== undefined) this.#metrics.failures.inc({ reason });
    if (job.usage !== null) {
      this.#metrics.tokens.inc({ ...model, kind: "prompt" }, job.usage.prompt);
      this.#metrics.tokens.inc({ ...model, kind: "completion" }, job.usage.completion);
    }
    const waitMs = (job.startedAt ?? now) - job.enqueuedAt;
    this.#activity.request({
      id: job.id,
      model: job.model,
      path: job.path,
      key: job.owner,
      status,
      reason: reason ?? null,
      stream: job.stream,
      priority: job.priority,
      at: now,
      waitMs,
      swapMs: job.swapMs,
      totalMs: now - job.enqueuedAt,
      promptTokens: job.usage?.prompt ?? null,
      completionTokens: job.usage?.completion ?? null,
    });
    this.#log.info("request", {
      id: job.id,
      model: job.model,
      key: job.owner ?? undefined,
      path: job.path,
      stream: job.stream,
      wait_ms: waitMs,
      swap_ms: job.swapMs,
      attempts: job.attempts,
      prompt_tokens: job.usage?.prompt,
      completion_tokens: job.usage?.completion,
      // A warm slot (or a restored KV cache) shows here.
      cached_tokens: job.usage?.cached ?? undefined,
      status,
      ms: now - job.enqueuedAt,
      // When the client left (ms after it arrived) and how much of the answer it had by then.
      client_left_ms: job.clientLeftAt === null ? undefined : job.clientLeftAt - job.enqueuedAt,
      chunks: job.clientLeftAt === null || !job.stream ? undefined : job.chunksSent,
    });
  }
}
