/**
 * @module
 * Operator endpoints: `GET /health` (seed shape; 503 when Docker is unreachable),
 * `GET /metrics` (seed JSON; Prometheus text when the client asks for it) and `GET /queue` (what waits, in which order, with ETAs).
 */
import { messageOf } from "../lib/errors.ts";
import { Hono } from "hono";
import { prometheusText } from "../lib/metrics.ts";
import { wantsPrometheus } from "../lib/prometheus.ts";
import type { AppDeps } from "./app.ts";
import { clusterView } from "./cluster_view.ts";
import { queueView } from "./queue_view.ts";
import type { ModelSnapshot } from "../lib/swap_manager.ts";

/** The models serving now (ready), most recently loaded first. */
function readyModels(snap: ModelSnapshot): string[] {
  return snap.residents.filter((r) => r.phase === "ready").map((r) => r.model);
}

export function opsRoutes(deps: AppDeps): Hono {
  const { live, docker, models, dispatcher, metrics, clock, store, storeStatus } = deps;
  const app = new Hono();

  app.get("/health", async (c) => {
    const config = live.current;
    const snap = models.snapshot();
    const base = {
      status: "healthy",
      current_model: snap.loaded,
      resident_models: readyModels(snap),
      queue_size: dispatcher.queue.size,
      queue_capacity: config.queueSize,
      message: "Proxy is operational",
      ...(deps.cluster === null ? {} : { cluster: clusterView(deps.cluster) }),
    };
    try {
      await storeStatus.run(() => store.ping());
    } catch (err) {
      const reason = messageOf(err);
      return c.json({ ...base, status: "unhealthy", message: reason }, 503);
    }
    try {
      await docker.ping(AbortSignal.timeout(2000));
      const existing = new Set((await docker.list()).map((s) => s.name));
      const missing = config.models.filter((m) => !existing.has(m.containerName));
      if (config.models.length === 0) {
        base.message = "Proxy is operational, but config.yml lists no models";
      } else if (missing.length > 0) {
        base.message = `Proxy is operational; missing containers: ${
          missing.map((m) => `${m.containerName} (model ${m.id})`).join(", ")
        }. Create them with docker create`;
      }
      return c.json(base);
    } catch (err) {
      const reason = messageOf(err);
      return c.json({ ...base, status: "unhealthy", message: reason }, 503);
    }
  });

  app.get("/queue", (c) => c.json(queueView(deps)));

  app.get("/metrics", async (c) => {
    const config = live.current;
    if (wantsPrometheus(c.req.header("accept") ?? null, c.req.query("format"))) {
      const text = prometheusText(metrics, {
        models: config.models.map((m) => m.id),
        loaded: readyModels(models.snapshot()),
        queueDepth: new Map(
          config.models.map((m) => [m.id, dispatcher.queue.waiting().jobsOf(m.id).length]),
        ),
        inflight: dispatcher.active,
        numWorkers: config.numWorkers,
        queuedBytes: dispatcher.bodies.held,
        maxQueuedBytes: dispatcher.bodies.limit,
        now: clock.now(),
        cluster: deps.cluster === null
          ? null
          : { node: deps.cluster.node, nodes: 1 + deps.cluster.peers().length },
      });
      return c.body(text, 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
    }
    const pending = dispatcher.queue.size;
    const processing = dispatcher.active;
    // The store's view covers batch lines and other nodes; without it, this process's view.
    const stored = await storeStatus.run(() => store.stats()).catch(() => null);
    const snap = models.snapshot();
    return c.json({
      uptime_seconds: Math.floor((clock.now() - metrics.startedAt) / 1000),
      total_requests: metrics.totalRequests,
      successful_requests: metrics.successfulRequests,
      failed_requests: metrics.failedRequests,
      cancelled_requests: metrics.cancelledRequests,
      active_workers: processing,
      peak_concurrent_requests: metrics.peakConcurrentRequests,
      num_workers: config.numWorkers,
      success_rate: Math.round(metrics.successRate() * 1000) / 1000,
      queue_stats: stored === null
        ? {
          pending_jobs: pending,
          processing_jobs: processing,
          dead_letter_queue: metrics.deadLetters,
          total_jobs: pending + processing,
          abandoned_jobs: null,
          store: `${store.name} (unreachable)`,
        }
        : {
          pending_jobs: stored.queued,
          processing_jobs: stored.running,
          dead_letter_queue: stored.dead,
          total_jobs: stored.total,
          abandoned_jobs: stored.abandoned,
          store: store.name,
        },
      current_model: snap.loaded,
      resident_models: snap.residents.map((r) => ({
        model: r.model,
        phase: r.phase,
        memory_gb: r.memoryGb,
      })),
      memory_budget_gb: config.memoryBudgetGb,
      pending_futures: pending + processing,
      queued_bytes: dispatcher.bodies.held,
      max_queued_bytes: dispatcher.bodies.limit,
      connections: {
        open: metrics.connections.open,
        refused: metrics.connections.refused,
        timed_out: metrics.connections.timedOut,
      },
      ...(deps.cluster === null ? {} : { cluster: clusterView(deps.cluster) }),
    });
  });

  return app;
}
