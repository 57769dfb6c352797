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
  /** What loading `model` costs (ms): learned, or its configured guess. */
  loadMs(model: string): number;
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

export interface Policy {
  <J extends WaitingJob>(view: SchedulerView<J>, rules: SchedulerRules): Decision<J>;
  /**
   * Whether a swap to `target`, decided while requests were in flight, must go on whatever
   * arrives meanwhile. When it need not, the policy decides afresh on every event until the
   * drain ends (new work for the loaded model may go first).
   */
  binds(view: SchedulerView, rules: SchedulerRules, target: string): boolean;
}

const WAIT = { kind: "wait" } as const;

/**
 * The executor's side of every policy, shared by the worker pool and the simulator:
 * (a) nothing is decided during a swap;
 * (b) a swap decided while requests were in flight (a drain) stays decided if the policy
 *     says it binds (its target is due): no new job of the old model starts, in-flight ones
 *     finish, then the swap — unless every job for the target left meanwhile;
 * (c) otherwise the policy decides afresh; a swap with requests in flight becomes a drain.
 * So a swap is only certain once the GPU is free or its target is due: work for the loaded
 * model that arrives during a drain is served first, and nobody starves.
 */
export function step<J extends WaitingJob>(
  policy: Policy,
  view: SchedulerView<J>,
  rules: SchedulerRules,
): Action<J> {
  if (view.swapping) return WAIT; // (a)
  const target = view.switchingTo;
  if (
    target !== null && view.waiting.line(target) !== undefined &&
    policy.binds(view, rules, target)
  ) { // (b)
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
 * A decided swap binds: the oldest job stays the oldest.
 */
export const decideFifo: Policy = Object.assign(
  <J extends WaitingJob>(view: SchedulerView<J>): Decision<J> => {
    let head: J | undefined;
    for (const line of linesOf(view.waiting)) {
      for (const job of headsOf(line)) if (head === undefined || job.seq < head.seq) head = job;
    }
    if (head === undefined) return WAIT; // (1)
    if (head.model === view.loaded) return view.freeWorkers > 0 ? serve(head) : WAIT; // (2)
    return { kind: "swap", to: head.model }; // (3)
  },
  { binds: () => true },
);

/**
 * Greedy collation (llama-swap, Ollama), deciding when the GPU is free: serve the loaded model
 * while it has work.
 * (1) nothing waits → wait;
 * (2) the loaded model has waiting jobs → serve the first (priority, then age);
 * (3) otherwise swap to the model of the first waiting job.
 * A decided swap never binds: work for the loaded model that arrives before its requests in
 * flight finished goes first. No wait is bounded.
 */
export const decideGreedy: Policy = Object.assign(
  <J extends WaitingJob>(view: SchedulerView<J>, rules: SchedulerRules): Decision<J> => {
    if (view.waiting.size === 0) return WAIT; // (1)
    const mine = view.loaded === null ? undefined : view.waiting.line(view.loaded);
    if (mine !== undefined) { // (2)
      return view.freeWorkers > 0 ? serve(first([mine], view.now, rules)) : WAIT;
    }
    return { kind: "swap", to: first(linesOf(view.waiting), view.now, rules).model }; // (3)
  },
  { binds: () => false },
);

/**
 * Affinity (default): greedy, with every wait bounded and the next model chosen for the work
 * it serves per second of loading.
 * (1) nothing waits → wait;
 * (2) nothing loaded → swap to the best target (see `bestTarget`);
 * (3) a job for another model is *due*, and the first due job pulls a swap, when
 *     (a) it waited its model's `max_wait` and the loaded model has been up that long too
 *         (so even adversarial traffic swaps at most once per `max_wait`), or
 *     (b) it outranks all the loaded model's waiting work (interactive behind a batch
 *         burst, or nothing waiting for the loaded model) and the loaded model has been up
 *         its `min_residency`;
 * (4) the loaded model has waiting jobs → serve the first (priority, then age);
 * (5) otherwise swap to the best target among the other models.
 * A decided swap binds only while its target has a due job (3), which is what bounds waits.
 * When it waits, it names the time at which a job becomes due, so nothing has to poll.
 */
export const decideAffinity: Policy = Object.assign(
  <J extends WaitingJob>(view: SchedulerView<J>, rules: SchedulerRules): Decision<J> => {
    const { waiting, loaded } = view;
    if (waiting.size === 0) return WAIT; // (1)
    if (loaded === null) return { kind: "swap", to: bestTarget(linesOf(waiting), view, rules) }; // (2)
    const mine = waiting.line(loaded);
    const others = linesOf(waiting, loaded);
    if (others.length === 0) return serveFirst(mine!, view, rules, undefined); // (4)
    const { due, until } = firstDue(others, mine, view, rules); // (3)
    if (due !== undefined) return { kind: "swap", to: due.model };
    if (mine === undefined) return { kind: "swap", to: bestTarget(others, view, rules) }; // (5)
    return serveFirst(mine, view, rules, until); // (4)
  },
  {
    binds(view: SchedulerView, rules: SchedulerRules, target: string): boolean {
      if (view.loaded === null) return true;
      const line = view.waiting.line(target);
      if (line === undefined) return false;
      const mine = view.waiting.line(view.loaded);
      return firstDue([line], mine, view, rules).due !== undefined;
    },
  },
);

/** The first due job among `others` (3), and the earliest time one becomes due. */
function firstDue<J extends WaitingJob>(
  others: ModelLine<J>[],
  mine: ModelLine<J> | undefined,
  view: SchedulerView<WaitingJob>,
  rules: SchedulerRules,
): { due: J | undefined; until: number } {
  const now = view.now;
  const mineRank = mine === undefined
    ? Infinity
    : Math.min(...headsOf(mine).map((job) => rankOf(job, now, rules)));
  // Heads suffice: within a line an older job is due no later than a newer one.
  let due: J | undefined;
  let until = Infinity;
  for (const line of others) {
    for (const job of headsOf(line)) {
      const at = dueAt(job, mineRank, view, rules);
      if (at > now) until = Math.min(until, at);
      else if (due === undefined || before(job, due, now, rules)) due = job;
    }
  }
  return { due, until };
}

/**
 * The model to load next when nothing is due: among the models with work of the best rank
 * waiting (interactive before batch), the one that serves the most waiting jobs per second
 * of loading; ties go to the oldest head. So a 180 s model is not loaded for one request
 * while six wait for a 7 s one; the skipped request still becomes due at `max_wait`.
 */
function bestTarget<J extends WaitingJob>(
  lines: ModelLine<J>[],
  view: SchedulerView<J>,
  rules: SchedulerRules,
): string {
  const now = view.now;
  let best: { model: string; rank: number; score: number; head: J } | undefined;
  for (const line of lines) {
    const head = first([line], now, rules);
    const rank = rankOf(head, now, rules);
    const count = rank === 0 ? Math.max(1, line.interactive.length) : line.batch.length;
    const score = count / Math.max(1, rules.loadMs(head.model));
    const better = best === undefined || rank < best.rank ||
      (rank === best.rank && (score > best.score ||
        (score === best.score && before(head, best.head, now, rules))));
    if (better) best = { model: head.model, rank, score, head };
  }
  return best!.model;
}

/** When rule (3) makes `job` due, given the loaded model's best rank (Infinity: never). */
function dueAt(
  job: WaitingJob,
  mineRank: number,
  view: SchedulerView<WaitingJob>,
  rules: SchedulerRules,
): number {
  const maxWait = rules.maxWaitMs(job.model);
  // (3a) The loaded model also stays at least as long as loading it took: a swap's cost is
  // earned back before the next one (at most half of the GPU's time goes to loading).
  const stay = Math.max(maxWait, rules.loadMs(view.loaded!));
  const byWait = Math.max(job.enqueuedAt + maxWait, view.loadedSince + stay);
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
