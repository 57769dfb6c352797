/** Job records and batch lines as the store tests hand them to a store. */
import type { JobRecord, NewAsyncJob } from "../../lib/store/contract.ts";

/** `n` batch lines of `group`, in lane `model`, ids `${group}-${i}`. */
export function asyncJobs(
  group: string,
  n: number,
  model = "a",
  payload = (i: number) => `{"i":${i}}`,
): NewAsyncJob[] {
  return Array.from({ length: n }, (_, i): NewAsyncJob => ({
    id: `${group}-${i}`,
    model,
    priority: "batch",
    lane: model,
    order: i,
    group,
    payload: payload(i),
  }));
}

/** A synchronous request `node` holds, in `state` since `now`. */
export function syncJob(
  id: string,
  node: string,
  state: JobRecord["state"],
  now: number,
): JobRecord {
  return {
    id,
    kind: "sync",
    model: "a",
    priority: "interactive",
    state,
    attempts: state === "queued" ? 0 : 1,
    node,
    lane: null,
    order: 0,
    group: null,
    createdAt: 0,
    updatedAt: now,
    payload: null,
    result: null,
  };
}
