/**
 * @module
 * Scheduling policies as pure functions: given what waits and what is loaded, decide the next
 * step. They never await and never act; `worker.ts` and the simulator carry decisions out
 * through `step()`, so both run exactly this code. Policies read only the heads of each
 * model's lines (lib/waiting.ts), so a decision costs O(models). Design: docs/scheduler.md.
 */
import type { ModelLine, WaitingView } from "./waiting.ts";

export type Priority = "interactive" | "batch";
export const PRIORITIES: readonly Priority[] = ["interactive", "batch"];

/** What a policy needs to know about one waiting job. */
export interface WaitingJob {
  readonly model: string;
  /** Arrival order. */
  readonly seq: number;
  readonly enqueuedAt: number;
  readonly priority: Priority;
}

export interface SchedulerView<J extends WaitingJob = WaitingJob> {
  /** Waiting jobs, per model and class, in arrival order. */
  waiting: WaitingView<J>;
  /** The model whose container is up and healthy, or null. */
  loaded: string | null;
  /** When `loaded` became ready (ms). */
  loadedSince: number;
  /** A swap (or start-up reconcile) is under way. */
  swapping: boolean;
  /** A swap was decided and waits for in-flight requests to finish. */
  switchingTo: string | null;
  /** Requests being served by the backend right now. */
  inflight: number;
  /** Workers free to take a job. */
  freeWorkers: number;
  now: number;
}

export interface SchedulerRules {
  /** How long a job for another model may wait before it pulls a swap (ms). */
  maxWaitMs(model: string): number;
  /**
   * How long a just-loaded model stays before a waiting job may pull it away (ms): it
   * serves something worth its load time first. Must be > 0, or two overdue models could
   * swap back and forth without serving anything.
   */
  minResidencyMs(model: string): number;
  /** A batch job that waited this long counts as interactive (ms). */
  batchAgingMs: number;
}

export type Decision<J extends WaitingJob = WaitingJob> =
  | { kind: "serve"; job: J }
  | { kind: "swap"; to: string }
  /** `until`: decide again at this time even if nothing happens (a wait bound expires). */
  | { kind: "wait"; until?: number };

/** What the executor does next; `drain` means "swap once in-flight requests finished". */
export type Action<J extends WaitingJob = WaitingJob> =
  | Decision<J>
  | { kind: "drain"; to: string };

export type Policy = <J extends WaitingJob>(
  view: SchedulerView<J>,
  rules: SchedulerRules,
) => Decision<J>;

const WAIT = { kind: "wait" } as const;

/**
 * The executor's side of every policy, shared by the worker pool and the simulator:
 * (a) nothing is decided during a swap;
 * (b) once a swap was decided, no new job of the old model starts (no endless tail): wait
 *     for in-flight requests, then swap — unless every job for the target left meanwhile;
 * (c) otherwise the policy decides; a swap with requests in flight becomes a drain.
 */
export function step<J extends WaitingJob>(
  policy: Policy,
  view: SchedulerView<J>,
  rules: SchedulerRules,
): Action<J> {
  if (view.swapping) return WAIT; // (a)
  const target = view.switchingTo;
  if (target !== null && view.waiting.line(target) !== undefined) { // (b)
    return view.inflight === 0 ? { kind: "swap", to: target } : { kind: "drain", to: target };
  }
  const decision = policy(view, rules); // (c)
  if (decision.kind === "swap" && view.inflight > 0) return { kind: "drain", to: decision.to };
  return decision;
}

/** 0 for interactive work (and batch work that aged past `batchAgingMs`), 1 for batch. */
export function rankOf(job: WaitingJob, now: number, rules: SchedulerRules): number {
  return job.priority === "interactive" || now - job.enqueuedAt >= rules.batchAgingMs ? 0 : 1;
}

/** Whether `a` goes before `b`: lower rank, then older. */
function before(a: WaitingJob, b: WaitingJob, now: number, rules: SchedulerRules): boolean {
  const diff = rankOf(a, now, rules) - rankOf(b, now, rules);
  return diff < 0 || (diff === 0 && a.seq < b.seq);
}

/** The heads of a model's lines: within a line, nobody goes before its head. */
function headsOf<J extends WaitingJob>(line: ModelLine<J>): J[] {
  const heads: J[] = [];
  if (line.interactive.length > 0) heads.push(line.interactive[0]);
  if (line.batch.length > 0) heads.push(line.batch[0]);
  return heads;
}

/** The job to go first among `lines`: lowest rank, then oldest. */
function first<J extends WaitingJob>(
  lines: Iterable<ModelLine<J>>,
  now: number,
  rules: SchedulerRules,
): J {
  let best: J | undefined;
  for (const line of lines) {
    for (const job of headsOf(line)) {
      if (best === undefined || before(job, best, now, rules)) best = job;
    }
  }
  return best!;
}

/** The lines of every model but `except`. */
function linesOf<J extends WaitingJob>(waiting: WaitingView<J>, except: string | null = null) {
  const lines: ModelLine<J>[] = [];
  for (const [model, line] of waiting.lines()) if (model !== except) lines.push(line);
  return lines;
}

/**
 * Strict FIFO, the seed's order:
 * (1) nothing waits → wait;
 * (2) the oldest job's model is loaded → serve it if a worker is free, else wait;
 * (3) it needs another model → swap to it (after in-flight requests finished).
 */
export const decideFifo: Policy = <J extends WaitingJob>(view: SchedulerView<J>) => {
  let head: J | undefined;
  for (const line of linesOf(view.waiting)) {
    for (const job of headsOf(line)) if (head === undefined || job.seq < head.seq) head = job;
  }
  if (head === undefined) return WAIT; // (1)
  if (head.model === view.loaded) return view.freeWorkers > 0 ? serve(head) : WAIT; // (2)
  return { kind: "swap", to: head.model }; // (3)
};

/**
 * Greedy collation (llama-swap, Ollama): serve the loaded model while it has work.
 * (1) nothing waits → wait;
 * (2) the loaded model has waiting jobs → serve the first (priority, then age);
 * (3) otherwise swap to the model of the first waiting job.
 */
export const decideGreedy: Policy = (view, rules) => {
  if (view.waiting.size === 0) return WAIT; // (1)
  const mine = view.loaded === null ? undefined : view.waiting.line(view.loaded);
  if (mine !== undefined) { // (2)
    return view.freeWorkers > 0 ? serve(first([mine], view.now, rules)) : WAIT;
  }
  return { kind: "swap", to: first(linesOf(view.waiting), view.now, rules).model }; // (3)
};

/**
 * Affinity (default): greedy, with every wait bounded.
 * (1) nothing waits → wait;
 * (2) nothing loaded → swap to the first job's model (priority, then age);
 * (3) a job for another model is *due*, and the first due job pulls a swap, when
 *     (a) it waited its model's `max_wait` and the loaded model has been up that long too
 *         (so even adversarial traffic swaps at most once per `max_wait`), or
 *     (b) it outranks all the loaded model's waiting work (interactive behind a batch
 *         burst) and the loaded model has been up its `min_residency`;
 * (4) the loaded model has waiting jobs → serve the first (priority, then age);
 * (5) otherwise swap to the first other job's model.
 * When it waits, it names the time at which a job becomes due, so nothing has to poll.
 */
export const decideAffinity: Policy = (view, rules) => {
  const { waiting, loaded, now } = view;
  if (waiting.size === 0) return WAIT; // (1)
  if (loaded === null) return { kind: "swap", to: first(linesOf(waiting), now, rules).model }; // (2)
  const mine = waiting.line(loaded);
  const others = linesOf(waiting, loaded);
  if (others.length === 0) return serveFirst(mine!, view, rules, undefined); // (4)
  if (mine === undefined) return { kind: "swap", to: first(others, now, rules).model }; // (5)

  const mineRank = Math.min(...headsOf(mine).map((job) => rankOf(job, now, rules)));
  // (3) Heads suffice: within a line an older job is due no later than a newer one.
  let due: WaitingJob | undefined;
  let until = Infinity;
  for (const line of others) {
    for (const job of headsOf(line)) {
      const at = dueAt(job, mineRank, view, rules);
      if (at > now) until = Math.min(until, at);
      else if (due === undefined || before(job, due, now, rules)) due = job;
    }
  }
  if (due !== undefined) return { kind: "swap", to: due.model };
  return serveFirst(mine, view, rules, until); // (4)
};

/** When rule (3) makes `job` due, given the loaded model's best rank (Infinity: never). */
function dueAt(
  job: WaitingJob,
  mineRank: number,
  view: SchedulerView<WaitingJob>,
  rules: SchedulerRules,
): number {
  const maxWait = rules.maxWaitMs(job.model);
  const byWait = Math.max(job.enqueuedAt, view.loadedSince) + maxWait; // (3a)
  if (mineRank === 0) return byWait;
  // (3b): interactive now, or a batch job once it has aged into interactive.
  const outranksFrom = job.priority === "interactive" ? 0 : job.enqueuedAt + rules.batchAgingMs;
  const residentFrom = view.loadedSince + rules.minResidencyMs(view.loaded!);
  return Math.min(byWait, Math.max(outranksFrom, residentFrom));
}

function serveFirst<J extends WaitingJob>(
  mine: ModelLine<J>,
  view: SchedulerView<J>,
  rules: SchedulerRules,
  until: number | undefined,
): Decision<J> {
  if (view.freeWorkers > 0) return serve(first([mine], view.now, rules));
  return until === undefined ? WAIT : { kind: "wait", until };
}

function serve<J extends WaitingJob>(job: J): Decision<J> {
  return { kind: "serve", job };
}

export const POLICIES = {
  fifo: decideFifo,
  greedy: decideGreedy,
  affinity: decideAffinity,
} as const satisfies Record<string, Policy>;

export type PolicyName = keyof typeof POLICIES;
