/**
 * @module
 * The live dashboard: `GET /dashboard` (the page), `GET /dashboard/state` (one snapshot as
 * JSON) and `GET /dashboard/events` (the same snapshot over SSE, pushed on every model change,
 * swap and finished request, and once a second for the clocks). Read-only and open like
 * `/metrics`; its admin buttons go through `/admin`, which needs the admin key.
 */
import { messageOf } from "../lib/errors.ts";
import { Hono } from "hono";
import type { Docker } from "../lib/docker.ts";
import { DASHBOARD_HTML } from "./dashboard_page.ts";
import type { AppDeps } from "./app.ts";
import { queueView, runningView } from "./queue_view.ts";
import { clusterView } from "./cluster_view.ts";

/** How long a Docker answer is reused: every open dashboard asks every second. */
const DOCKER_CACHE_MS = 2000;
/** Waiting requests listed (with ETAs); a deep queue is counted, not sent whole each update. */
const QUEUE_ROWS = 100;
/** Changes closer together than this are sent as one update. */
const COALESCE_MS = 100;
const TICK_MS = 1000;

interface DockerView {
  ok: boolean;
  error: string | null;
  /** Container name → running, for the configured containers that exist. */
  containers: Map<string, boolean>;
}

/** Asks Docker at most once per DOCKER_CACHE_MS, however many dashboards are open. */
function dockerProbe(docker: Docker, now: () => number) {
  let last: DockerView = { ok: true, error: null, containers: new Map() };
  let checkedAt = -Infinity;
  let pending: Promise<DockerView> | null = null;
  const check = async (): Promise<DockerView> => {
    try {
      await docker.ping(AbortSignal.timeout(DOCKER_CACHE_MS));
      const list = await docker.list();
      return { ok: true, error: null, containers: new Map(list.map((c) => [c.name, c.running])) };
    } catch (err) {
      return { ...last, ok: false, error: messageOf(err) };
    }
  };
  const view = (): Promise<DockerView> => {
    if (now() - checkedAt < DOCKER_CACHE_MS) return Promise.resolve(last);
    pending ??= check().then((view) => {
      last = view;
      checkedAt = now();
      pending = null;
      return view;
    });
    return pending;
  };
  /** Containers just moved: ask again next time. */
  const stale = () => void (checkedAt = -Infinity);
  return { view, stale };
}

const tenths = (ms: number) => Math.round(ms / 100) / 10;

export function dashboardRoutes(deps: AppDeps): Hono {
  const { live, models, dispatcher, activity, metrics, clock, store, storeStatus } = deps;
  const docker = dockerProbe(deps.docker, () => clock.now());
  models.onChange(docker.stale);
  const app = new Hono();

  async function snapshot() {
    const config = live.current;
    const now = clock.now();
    const snap = models.snapshot();
    const queue = queueView(deps, QUEUE_ROWS);
    const containers = await docker.view();
    return {
      uptime_s: Math.floor((now - metrics.startedAt) / 1000),
      policy: queue.policy,
      admin: config.adminKey !== null,
      current: {
        model: snap.loaded,
        phase: snap.phase,
        target: snap.target,
        since_s: tenths(now - snap.since),
      },
      workers: queue.workers,
      memory_budget_gb: config.memoryBudgetGb,
      resident: snap.residents.map((r) => ({
        model: r.model,
        phase: r.phase,
        memory_gb: r.memoryGb,
        since_s: tenths(now - r.since),
      })),
      running: runningView(deps),
      models: config.models.map((m) => {
        const waiting = dispatcher.queue.waiting().line(m.id);
        const running = containers.containers.get(m.containerName);
        return {
          id: m.id,
          state: models.stateOf(m.id),
          container: running === undefined
            ? (containers.ok ? "missing" : "unknown")
            : running
            ? "running"
            : "stopped",
          waiting: {
            interactive: waiting?.interactive.length ?? 0,
            batch: waiting?.batch.length ?? 0,
          },
          load_s: queue.load_times[m.id].seconds,
          load_learned: queue.load_times[m.id].learned,
          ttl_s: m.ttlMs === null ? null : m.ttlMs / 1000,
        };
      }),
      queue: queue.jobs,
      queue_total: dispatcher.queue.waiting().size,
      swaps: activity.recentSwaps().map((s) => ({
        from: s.from,
        to: s.to,
        at: s.at,
        ms: s.ms,
        ok: s.ok,
        cause: s.cause,
        error: s.error,
        kv_saved_tokens: s.kvSaved?.tokens ?? null,
        kv_restored_tokens: s.kvRestored?.tokens ?? null,
        kv_ms: s.kvSaved || s.kvRestored ? (s.kvSaved?.ms ?? 0) + (s.kvRestored?.ms ?? 0) : null,
      })),
      requests: activity.recentRequests().map((r) => ({
        id: r.id,
        model: r.model,
        path: r.path,
        key: r.key,
        status: r.status,
        reason: r.reason,
        stream: r.stream,
        priority: r.priority,
        at: r.at,
        wait_ms: r.waitMs,
        swap_ms: r.swapMs,
        total_ms: r.totalMs,
        prompt_tokens: r.promptTokens,
        completion_tokens: r.completionTokens,
      })),
      cluster: deps.cluster === null ? null : clusterView(deps.cluster),
      health: {
        docker: { ok: containers.ok, error: containers.error },
        store: { ok: storeStatus.up, name: store.name, error: storeStatus.error?.message ?? null },
      },
    };
  }

  app.get("/dashboard", (c) => c.html(DASHBOARD_HTML));

  app.get("/dashboard/state", async (c) => c.json(await snapshot()));

  app.get("/dashboard/events", () => {
    const encoder = new TextEncoder();
    let stop = () => {};
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        let timer: ReturnType<typeof setTimeout> | null = null;
        let sending = false;
        let closed = false;
        const send = async () => {
          timer = null;
          if (sending || closed) return;
          sending = true;
          try {
            const data = JSON.stringify(await snapshot());
            if (!closed) controller.enqueue(encoder.encode(`event: state\ndata: ${data}\n\n`));
          } catch (err) {
            // A timer calls this: an escaping error would end the process, not just this feed.
            deps.log.warn("dashboard_feed_failed", {
              error: messageOf(err),
            });
            end(); // the page reconnects
          } finally {
            sending = false;
          }
        };
        const soon = () => timer ??= setTimeout(send, COALESCE_MS);
        const ticker = setInterval(send, TICK_MS);
        const offModels = models.onChange(soon);
        const offActivity = activity.onChange(soon);
        const offQueue = dispatcher.queue.onChange(soon);
        stop = () => {
          if (closed) return;
          closed = true;
          clearInterval(ticker);
          if (timer !== null) clearTimeout(timer);
          offModels();
          offActivity();
          offQueue();
          deps.closing.removeEventListener("abort", end);
        };
        // A shutdown waits for open responses: end this one so it does not wait forever.
        const end = () => {
          if (closed) return;
          stop();
          controller.close();
        };
        deps.closing.addEventListener("abort", end);
        if (deps.closing.aborted) return end();
        send();
      },
      cancel: () => stop(),
    });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream",
        "cache-control": "no-cache",
        "x-accel-buffering": "no",
      },
    });
  });

  return app;
}
