/**
 * @module
 * The queue and the running requests as operators read them (`GET /queue`, `/admin/queue`,
 * the dashboard): snake_case JSON built from the dispatcher's and the swap manager's state.
 */
import type { AppDeps } from "./app.ts";

type ViewDeps = Pick<AppDeps, "live" | "models" | "dispatcher" | "clock">;

/** The queue, its first `limit` jobs with their ETAs, the resident set and the workers. */
export function queueView({ live, models, dispatcher, clock }: ViewDeps, limit = Infinity) {
  const config = live.current;
  const snap = models.snapshot();
  const now = clock.now();
  const ready = snap.residents.filter((r) => r.phase === "ready");
  const { loadTimes } = dispatcher;
  return {
    policy: config.scheduler.policy,
    current_model: snap.loaded,
    phase: snap.phase,
    loading: snap.target,
    switching_to: dispatcher.switchingTo,
    resident: snap.residents.map((r) => ({
      model: r.model,
      phase: r.phase,
      memory_gb: r.memoryGb,
      running: r.inflight,
      parallel: dispatcher.parallelOf(r.model),
    })),
    memory_budget_gb: config.memoryBudgetGb,
    workers: {
      total: ready.length === 0
        ? config.numWorkers
        : ready.reduce((n, r) => n + dispatcher.parallelOf(r.model), 0),
      busy: dispatcher.active,
    },
    jobs: dispatcher.queue.list().slice(0, limit).map((job, index) => ({
      id: job.id,
      model: job.model,
      priority: job.priority,
      position: index + 1,
      waited_s: Math.round((now - job.enqueuedAt) / 100) / 10,
      eta_s: Math.round(dispatcher.estimateStartMs(job, snap) / 1000),
    })),
    load_times: Object.fromEntries(config.models.map((m) => [m.id, {
      seconds: Math.round(loadTimes.estimate(m.id) / 100) / 10,
      learned: loadTimes.learned(m.id),
    }])),
  };
}

/** Requests being served right now, oldest first (the dashboard). */
export function runningView({ dispatcher, clock }: Pick<ViewDeps, "dispatcher" | "clock">) {
  const now = clock.now();
  return dispatcher.running().map((job) => ({
    id: job.id,
    model: job.model,
    priority: job.priority,
    stream: job.stream,
    running_s: Math.round((now - (job.startedAt ?? now)) / 100) / 10,
  }));
}
