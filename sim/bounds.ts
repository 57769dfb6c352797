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
