/**
 * @module
 * The proxy's request counters as a client reads them from `/metrics`, for tests that check
 * every request it received was counted once, however it ended.
 */
import { getJson } from "./client.ts";

export interface Counts {
  total: number;
  successful: number;
  failed: number;
  cancelled: number;
  pending: number;
  active: number;
  /** lqp_requests_total{status="499"}, summed over models. */
  logged499: number;
}

export async function countsOf(url: string): Promise<Counts> {
  const m = (await getJson(`${url}/metrics`)).body as Record<string, number> & {
    queue_stats: { pending_jobs: number };
  };
  const text = await (await fetch(`${url}/metrics?format=prometheus`)).text();
  let logged499 = 0;
  for (const match of text.matchAll(/^lqp_requests_total\{[^}]*status="499"[^}]*\} (\d+)$/gm)) {
    logged499 += Number(match[1]);
  }
  return {
    total: m.total_requests,
    successful: m.successful_requests,
    failed: m.failed_requests,
    cancelled: m.cancelled_requests,
    pending: m.queue_stats.pending_jobs,
    active: m.active_workers,
    logged499,
  };
}

/** Requests the proxy received that have not ended yet. */
export const unfinished = (c: Counts) => c.total - c.successful - c.failed - c.cancelled;
