/**
 * @module
 * Offline lower bounds on a trace, for targets no online policy can meet: computed from the
 * arrivals alone, whatever the order of service.
 */
import type { Trace } from "./simulate.ts";

/**
 * Trace (g)'s models that interrupt its batch model, whose bound `deno task sim` prints and
 * the simulator tests check: its chat model first, then the giant.
 */
export const NIGHT_BATCH_INTERRUPTING = ["qwen3-30b-instruct", "gpt-oss-120b"] as const;

/**
 * The fewest loads of `models` (each a separate episode of the GPU) needed so that every
 * request for them starts within `waitMs` of its arrival, plus the first load of anything:
 * an episode that starts at time s can serve only requests that arrived in [s − waitMs, s]
 * or later, so the requests of one model are covered by intervals of length `waitMs`, and
 * the fewest intervals come from covering greedily from the earliest arrival.
 */
export function minLoads(trace: Trace, models: readonly string[], waitMs: number): number {
  let loads = 1;
  for (const model of models) {
    const arrivals = trace.requests.filter((r) => r.model === model).map((r) => r.t * 1000)
      .sort((a, b) => a - b);
    let coveredUntil = -Infinity;
    for (const t of arrivals) {
      if (t > coveredUntil) {
        loads++;
        coveredUntil = t + waitMs;
      }
    }
  }
  return loads;
}

/**
 * How long an interactive request for `model` waits at most under a policy that honours
 * `max_wait`: it becomes due, the requests in flight on the loaded model finish (at most the
 * longest service), the old model stops and `model` loads.
 */
export function maxWaitServiceMs(trace: Trace, model: string): number {
  const { header } = trace;
  const longest = Math.max(...trace.requests.map((r) => r.service));
  return (header.scheduler.max_wait + longest + header.stop_s + header.models[model].load_s) *
    1000;
}

/**
 * A lower bound (within `precisionMs` of the best possible) on the worst wait (ms) of any
 * schedule of a two-model trace, one model loaded at a time, that serves each model's requests
 * in arrival order (the proxy's promise within a class), computed offline with every arrival
 * and service time known. It relaxes every real schedule of that kind, so no such policy,
 * online or not, does better:
 *
 * - the GPU alternates between episodes of the two models; an episode that becomes ready at R
 *   (its stop and load after the previous episode's end) serves a run of its model's next
 *   requests, each started between its arrival and its arrival + W, so R ≤ the run's first
 *   arrival + W;
 * - the episode ends no earlier than R + (the run's work ÷ workers), R + its longest request,
 *   and each request's arrival + service (nothing is cut: a swap waits for requests in
 *   flight); idling longer is allowed.
 *
 * For a given W, the earliest end of an episode that leaves the first i and j requests of
 * the two models served is a dynamic program over (i, j, which model ran last); W is feasible
 * when every request can be served. Bisection returns the largest W found infeasible.
 */
export function minWorstWaitInOrderMs(trace: Trace, precisionMs = 100): number {
  const { header } = trace;
  const models = Object.keys(header.models);
  if (models.length !== 2 || header.memory_budget !== undefined) {
    throw new Error("minWorstWaitInOrderMs() takes two models, one loaded at a time");
  }
  const runs = models.map((model) =>
    trace.requests.filter((r) => r.model === model).sort((a, b) => a.t - b.t).map((r) => ({
      arrival: r.t * 1000,
      service: r.service * 1000,
    }))
  );
  const loadMs = models.map((model) => header.models[model].load_s * 1000);
  const stopMs = header.stop_s * 1000;
  const [n0, n1] = [runs[0].length, runs[1].length];
  const at = (i0: number, i1: number) => i0 * (n1 + 1) + i1;

  const feasible = (waitMs: number): boolean => {
    /** Earliest end of an episode of model m after which the first i0, i1 requests are served. */
    const end = [0, 1].map(() => new Float64Array((n0 + 1) * (n1 + 1)).fill(Infinity));
    const episode = (m: number, ready: number, i0: number, i1: number) => {
      const run = runs[m];
      const first = m === 0 ? i0 : i1;
      if (first >= run.length || run[first].arrival + waitMs < ready) return;
      let work = 0, longest = 0, finish = 0;
      for (let k = first; k < run.length; k++) {
        work += run[k].service;
        longest = Math.max(longest, run[k].service);
        finish = Math.max(finish, run[k].arrival + run[k].service);
        const e = Math.max(ready + work / header.num_workers, ready + longest, finish);
        const key = m === 0 ? at(k + 1, i1) : at(i0, k + 1);
        if (e < end[m][key]) end[m][key] = e;
      }
    };
    episode(0, loadMs[0], 0, 0);
    episode(1, loadMs[1], 0, 0);
    // Every episode serves at least one request, so states only grow in (i0, i1).
    for (let i0 = 0; i0 <= n0; i0++) {
      for (let i1 = 0; i1 <= n1; i1++) {
        for (const m of [0, 1]) {
          const e = end[m][at(i0, i1)];
          if (e === Infinity) continue;
          if (i0 === n0 && i1 === n1) return true;
          const other = 1 - m;
          episode(other, e + stopMs + loadMs[other], i0, i1);
        }
      }
    }
    return false;
  };

  let low = 0, high = 3_600_000;
  while (!feasible(high)) [low, high] = [high, 2 * high];
  while (high - low > precisionMs) {
    const mid = (low + high) / 2;
    if (feasible(mid)) high = mid;
    else low = mid;
  }
  return low; // infeasible: every such schedule's worst wait is longer
}
