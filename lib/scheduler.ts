/**
 * @module
 * The scheduling policy as a pure function: given what waits and what is loaded, decide the
 * next step. It never awaits and never acts; `worker.ts` carries the decision out.
 */

/** What the policy needs to know about one waiting job. */
export interface WaitingJob {
  readonly model: string;
  readonly seq: number;
  readonly enqueuedAt: number;
}

export interface SchedulerView<J extends WaitingJob = WaitingJob> {
  /** Waiting jobs in arrival order. */
  waiting: readonly J[];
  /** The model whose container is up and healthy, or null. */
  loaded: string | null;
  /** A swap (or start-up reconcile) is under way. */
  swapping: boolean;
  /** Requests being served by the backend right now. */
  inflight: number;
  /** Workers free to take a job. */
  freeWorkers: number;
  now: number;
}

export type Decision<J extends WaitingJob = WaitingJob> =
  | { kind: "serve"; job: J }
  | { kind: "swap"; to: string }
  | { kind: "wait" };

export type Policy = <J extends WaitingJob>(view: SchedulerView<J>) => Decision<J>;

/**
 * Strict FIFO, the seed's order:
 * (1) nothing waits → wait;
 * (2) a swap is under way → wait;
 * (3) the oldest job's model is loaded → serve it if a worker is free, else wait;
 * (4) it needs another model → wait for in-flight requests to finish (never cut a
 *     stream), then swap to that model.
 */
export const decideFifo: Policy = (view) => {
  const head = view.waiting[0];
  if (head === undefined) return { kind: "wait" }; // (1)
  if (view.swapping) return { kind: "wait" }; // (2)
  if (head.model === view.loaded) { // (3)
    return view.freeWorkers > 0 ? { kind: "serve", job: head } : { kind: "wait" };
  }
  return view.inflight > 0 ? { kind: "wait" } : { kind: "swap", to: head.model }; // (4)
};
