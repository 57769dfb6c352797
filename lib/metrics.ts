/**
 * @module
 * Counters behind `/metrics`: the seed's plain numbers, and labelled series for Prometheus.
 * Owned by the dispatcher; no I/O.
 */
import type { Clock } from "./clock.ts";
import { ConnectionStats } from "./http_server.ts";
import { Counter, counter, gauge, Histogram, withLabel } from "./prometheus.ts";

export class Metrics {
  readonly startedAt: number;
  totalRequests = 0;
  successfulRequests = 0;
  failedRequests = 0;
  cancelledRequests = 0;
  peakConcurrentRequests = 0;
  /** Jobs that failed after `max_attempts`. */
  deadLetters = 0;
  readonly requests = new Counter("lqp_requests_total", "Finished requests by model and status");
  readonly requestSeconds = new Histogram(
    "lqp_request_duration_seconds",
    "Whole request time, queue wait and swap included",
  );
  readonly queueWaitSeconds = new Histogram(
    "lqp_queue_wait_seconds",
    "Time from arrival to the request reaching a backend",
  );
  readonly swapSeconds = new Histogram("lqp_swap_duration_seconds", "Stop + start + healthy time");
  readonly swaps = new Counter("lqp_swaps_total", "Model swaps by from and to");
  readonly failures = new Counter("lqp_failures_total", "Failed requests by reason (error code)");
  readonly tokens = new Counter(
    "lqp_tokens_total",
    "Tokens the backends reported in usage (or llama-server timings), by model and kind",
  );

  readonly kvSavedTokens = new Counter(
    "lqp_kv_saved_tokens_total",
    "Tokens of slot KV cache saved before a model stopped, by model",
  );
  readonly kvRestoredTokens = new Counter(
    "lqp_kv_restored_tokens_total",
    "Tokens of slot KV cache restored when a model came back, by model",
  );
  readonly kvSaveSeconds = new Histogram("lqp_kv_save_seconds", "Time a stop spent saving slots");
  readonly kvRestoreSeconds = new Histogram(
    "lqp_kv_restore_seconds",
    "Time a start spent restoring slots, before the first request",
  );

  /** Client connections, kept by the HTTP server. */
  readonly connections = new ConnectionStats();

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

/** What the Prometheus page needs besides the counters: a snapshot taken at scrape time. */
export interface ScrapeState {
  models: readonly string[];
  /** Models up and healthy (the resident set's ready ones). */
  loaded: readonly string[];
  queueDepth: ReadonlyMap<string, number>;
  inflight: number;
  numWorkers: number;
  /** Request body bytes held, and the limit (max_queued_bytes). */
  queuedBytes: number;
  maxQueuedBytes: number;
  now: number;
  /** In a cluster: this node's name, put on every series, and the live nodes. */
  cluster: { node: string; nodes: number } | null;
}

/** The whole Prometheus text page. */
export function prometheusText(metrics: Metrics, state: ScrapeState): string {
  const lines = [
    ...gauge("lqp_uptime_seconds", "Seconds since the proxy started", [
      [{}, Math.floor((state.now - metrics.startedAt) / 1000)],
    ]),
    ...gauge(
      "lqp_model_loaded",
      "1 for each model whose container is up and healthy",
      state.models.map((m) => [{ model: m }, state.loaded.includes(m) ? 1 : 0]),
    ),
    ...gauge(
      "lqp_queue_depth",
      "Requests waiting, by model",
      state.models.map((m) => [{ model: m }, state.queueDepth.get(m) ?? 0]),
    ),
    ...gauge("lqp_inflight_requests", "Requests being served by a backend", [[{}, state.inflight]]),
    ...gauge("lqp_workers", "num_workers", [[{}, state.numWorkers]]),
    ...gauge(
      "lqp_queued_bytes",
      "Request body bytes held (read, waiting, sent until the backend answers)",
      [[{}, state.queuedBytes]],
    ),
    ...gauge("lqp_max_queued_bytes", "max_queued_bytes", [[{}, state.maxQueuedBytes]]),
    ...gauge("lqp_connections_open", "Client connections open", [[{}, metrics.connections.open]]),
    ...counter(
      "lqp_connections_refused_total",
      "Connections closed at once because max_connections were open",
      metrics.connections.refused,
    ),
    ...counter(
      "lqp_connections_timed_out_total",
      "Connections closed for sending their request too slowly (header_timeout, body_timeout)",
      metrics.connections.timedOut,
    ),
    ...gauge("lqp_dead_letters", "Requests that failed after max_attempts", [[
      {},
      metrics.deadLetters,
    ]]),
    ...metrics.requests.render(),
    ...metrics.failures.render(),
    ...metrics.tokens.render(),
    ...metrics.requestSeconds.render(),
    ...metrics.queueWaitSeconds.render(),
    ...metrics.swaps.render(),
    ...metrics.swapSeconds.render(),
    ...metrics.kvSavedTokens.render(),
    ...metrics.kvRestoredTokens.render(),
    ...metrics.kvSaveSeconds.render(),
    ...metrics.kvRestoreSeconds.render(),
  ];
  if (state.cluster === null) return lines.join("\n") + "\n";
  lines.push(
    ...gauge("lqp_cluster_nodes", "Live nodes of the cluster, this one included", [[
      {},
      state.cluster.nodes,
    ]]),
  );
  return withLabel(lines, "node", state.cluster.node).join("\n") + "\n";
}
