/**
 * @module
 * A discrete-event replay of a request trace through the REAL scheduling code (`step()` and
 * the policies of lib/scheduler.ts) on a virtual clock: deterministic, and a day of traffic
 * replays in milliseconds. Swaps and service take the times the trace says; nothing else is
 * modelled (no network, no failures).
 */
import {
  type Action,
  type Policy,
  type SchedulerRules,
  step,
  type WaitingJob,
} from "../lib/scheduler.ts";
import { WaitingJobs } from "../lib/waiting.ts";
import { PRIORITIES, type Priority } from "../lib/priority.ts";
import { type Capacity, victimsFor } from "../lib/placement.ts";

export interface TraceModel {
  /** Start-to-healthy seconds. */
  load_s: number;
  /** Declared GB (with `memory_budget`). */
  memory?: number;
  /** Requests it serves at once; default `num_workers`. */
  parallel?: number;
}

export interface TraceHeader {
  name: string;
  description?: string;
  num_workers: number;
  queue_size: number;
  /** Seconds Docker takes to stop the old container. */
  stop_s: number;
  /** GB the resident models may declare together; absent: one model at a time. */
  memory_budget?: number;
  models: Record<string, TraceModel>;
  /** `min_residency` left out: each model's own load time, capped by `max_wait`. */
  scheduler: { max_wait: number; min_residency?: number; batch_aging: number };
}

export interface TraceRequest {
  /** Arrival, seconds from the start. */
  t: number;
  model: string;
  priority: Priority;
  /** Seconds the backend needs for it. */
  service: number;
}

export interface Trace {
  header: TraceHeader;
  requests: TraceRequest[];
}

interface SimJob extends WaitingJob {
  serviceMs: number;
}

export interface SimResult {
  /** Model loads, the first included (a load into free memory counts too). */
  swaps: number;
  /** GPU time spent stopping and loading models. */
  swapMs: number;
  /** Time the last request finished. */
  makespanMs: number;
  /** Queue wait (arrival to start of service) of every served job, per class. */
  waits: Record<Priority, number[]>;
  /** Each served job's seq, in service order: every admitted job exactly once. */
  servedOrder: number[];
  /** Turned away because the queue was full (429). */
  rejected: number;
  /** Models loaded, in order. */
  loads: string[];
  /** The most memory the resident set declared at once (GB; 0 without declared memory). */
  peakMemoryGb: number;
}

/**
 * The trace's scheduler settings as the dispatcher's rules; service times are each model's mean over
 * the trace (what the dispatcher's moving average converges to).
 */
export function rulesOf(header: TraceHeader, requests: readonly TraceRequest[]): SchedulerRules {
  const { max_wait, min_residency, batch_aging } = header.scheduler;
  const serviceMs = new Map<string, number>();
  for (const model of Object.keys(header.models)) {
    const mine = requests.filter((r) => r.model === model);
    const total = mine.reduce((sum, r) => sum + r.service, 0);
    serviceMs.set(model, mine.length === 0 ? 0 : (total / mine.length) * 1000);
  }
  return {
    serviceMs: (model) => serviceMs.get(model) ?? 0,
    maxWaitMs: () => max_wait * 1000,
    minResidencyMs: (model) =>
      Math.min(min_residency ?? header.models[model].load_s, max_wait) * 1000,
    batchAgingMs: batch_aging * 1000,
    loadMs: (model) => header.models[model].load_s * 1000,
  };
}

/**
 * Replays `trace` under `policy`.
 * @throws {Error} if the policy stalls with work waiting (a scheduler bug).
 */
export function simulate(
  trace: Trace,
  policy: Policy,
  rules = rulesOf(trace.header, trace.requests),
): SimResult {
  const { header } = trace;
  const arrivals = trace.requests.map((r, seq): SimJob => ({
    model: r.model,
    seq,
    enqueuedAt: Math.round(r.t * 1000),
    priority: r.priority,
    serviceMs: Math.round(r.service * 1000),
  })).sort((a, b) => a.enqueuedAt - b.enqueuedAt || a.seq - b.seq);

  const result: SimResult = {
    swaps: 0,
    swapMs: 0,
    makespanMs: 0,
    waits: Object.fromEntries(PRIORITIES.map((p) => [p, []])) as unknown as Record<
      Priority,
      number[]
    >,
    servedOrder: [],
    rejected: 0,
    loads: [],
    peakMemoryGb: 0,
  };
  const waiting = new WaitingJobs<SimJob>();
  const capacity = capacityOfTrace(header);
  const parallel = (model: string) => header.models[model].parallel ?? header.num_workers;
  /** Ready models: when they became ready, when they were last used, their requests' ends. */
  const residents = new Map<string, { since: number; lastUsed: number; inflight: number[] }>();
  let now = 0;
  let next = 0;
  let placing: { to: string; end: number } | null = null;
  let switchingTo: string | null = null;
  let wakeAt = Infinity;
  const occupants = () => {
    const list = [...residents].map(([model, r]) => ({ model, lastUsed: r.lastUsed }));
    return placing ? [...list, { model: placing.to, lastUsed: now }] : list;
  };
  const inflightCount = () => [...residents.values()].reduce((n, r) => n + r.inflight.length, 0);

  while (
    next < arrivals.length || waiting.size > 0 || inflightCount() > 0 || placing !== null
  ) {
    // Decide until the policy waits, exactly as the dispatcher does.
    wakeAt = Infinity;
    for (;;) {
      const view = new Map([...residents].map(([model, r]) => [model, {
        model,
        ready: true,
        since: r.since,
        inflight: r.inflight.length,
        free: parallel(model) - r.inflight.length,
      }]));
      if (placing) {
        view.set(placing.to, { model: placing.to, ready: false, since: now, inflight: 0, free: 0 });
      }
      const action: Action<SimJob> = step<SimJob>(policy, {
        waiting,
        residents: view,
        victimsFor: (model) => victimsFor(model, occupants(), capacity),
        placing: placing !== null,
        switchingTo,
        now,
      }, rules);
      if (action.kind === "wait") {
        switchingTo = null;
        wakeAt = action.until ?? Infinity;
        break;
      }
      if (action.kind === "drain") {
        switchingTo = action.to;
        break;
      }
      if (action.kind === "swap") {
        switchingTo = null;
        const victims = victimsFor(action.to, occupants(), capacity);
        for (const model of victims) residents.delete(model);
        const duration: number = (victims.length > 0 ? header.stop_s * 1000 : 0) +
          header.models[action.to].load_s * 1000;
        placing = { to: action.to, end: now + duration };
        const memory = occupants().reduce(
          (gb, o) => gb + (capacity.footprint(o.model).memoryGb ?? 0),
          0,
        );
        result.peakMemoryGb = Math.max(result.peakMemoryGb, memory);
        result.swaps++;
        result.swapMs += duration;
        result.loads.push(action.to);
        continue;
      }
      switchingTo = action.drainingTo ?? null;
      const job = action.job;
      waiting.remove(job);
      result.waits[job.priority].push(now - job.enqueuedAt);
      result.servedOrder.push(job.seq);
      const resident = residents.get(job.model)!;
      resident.inflight.push(now + job.serviceMs);
      resident.lastUsed = now;
    }

    const ends = [...residents.values()].flatMap((r) => r.inflight);
    const nextTime = Math.min(
      next < arrivals.length ? arrivals[next].enqueuedAt : Infinity,
      ...ends,
      placing ? placing.end : Infinity,
      wakeAt > now ? wakeAt : Infinity,
    );
    if (nextTime === Infinity) {
      throw new Error(`scheduler stalled at ${now} ms with ${waiting.size} jobs waiting`);
    }
    now = nextTime;
    for (const resident of residents.values()) {
      const left = resident.inflight.filter((end) => end > now);
      if (left.length < resident.inflight.length) {
        result.makespanMs = Math.max(result.makespanMs, ...resident.inflight);
        resident.inflight = left;
        resident.lastUsed = now;
      }
    }
    if (placing && placing.end <= now) {
      residents.set(placing.to, { since: now, lastUsed: now, inflight: [] });
      placing = null;
    }
    while (next < arrivals.length && arrivals[next].enqueuedAt <= now) {
      const job = arrivals[next++];
      if (waiting.size >= header.queue_size) result.rejected++;
      else waiting.add(job);
    }
  }
  return result;
}

/** What the trace's models may hold at once: its budget, or one model at a time. */
export function capacityOfTrace(header: TraceHeader): Capacity {
  return {
    budgetGb: header.memory_budget ?? null,
    // The simulator's models have no ports: each its own.
    footprint: (model) => ({ memoryGb: header.models[model].memory ?? 0, endpoint: model }),
  };
}

/**
 * The documented wait bound of the affinity policy for a job of class `priority`:
 * W ≤ batch_aging (batch only) + (1 + ⌈Q / N⌉ × M) × (max(max_wait, L) + 1.5 max_wait + S + L),
 * with M models, S the longest service, L the longest stop + load, Q the queue size and
 * N the workers. A due job's model gets a turn within M episodes of at most
 * max(max_wait, L) + 1.5 max_wait + S + L each (a model stays at least as long as loading it
 * took, plus up to 1.5 max_wait when it clears a short backlog first), and every turn starts at
 * least N of its jobs. See docs/scheduler_design.md.
 */
export function waitBoundMs(trace: Trace, priority: Priority): number {
  const { header } = trace;
  const s = Math.max(0, ...trace.requests.map((r) => r.service)) * 1000;
  const l = (header.stop_s + Math.max(...Object.values(header.models).map((m) => m.load_s))) *
    1000;
  const m = Object.keys(header.models).length;
  const maxWait = header.scheduler.max_wait * 1000;
  const episode = Math.max(maxWait, l) + 1.5 * maxWait + s + l;
  const aging = priority === "batch" ? header.scheduler.batch_aging * 1000 : 0;
  return aging + (1 + Math.ceil(header.queue_size / header.num_workers) * m) * episode;
}

/** Parses a JSONL trace: a header line, then one request per line. */
export function parseTrace(text: string): Trace {
  const lines = text.split("\n").filter((l) => l.trim() !== "");
  const header = JSON.parse(lines[0]) as TraceHeader;
  const requests = lines.slice(1).map((l) => JSON.parse(l) as TraceRequest);
  for (const r of requests) {
    if (!(r.model in header.models)) throw new Error(`trace names unknown model '${r.model}'`);
  }
  return { header, requests };
}

export interface WaitStats {
  count: number;
  mean: number;
  p50: number;
  p95: number;
  max: number;
}

export function waitStats(waitsMs: readonly number[]): WaitStats {
  if (waitsMs.length === 0) return { count: 0, mean: 0, p50: 0, p95: 0, max: 0 };
  const sorted = [...waitsMs].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
  const sum = sorted.reduce((a, b) => a + b, 0);
  return {
    count: sorted.length,
    mean: sum / sorted.length,
    p50: at(0.5),
    p95: at(0.95),
    max: sorted[sorted.length - 1],
  };
}
