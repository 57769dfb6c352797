/**
 * @module
 * Scheduling policies as pure functions: given what waits and what is loaded, decide the next
 * step. They never await and never act; `dispatcher.ts` and the simulator carry decisions out
 * through `step()`, so both run exactly this code. Policies read only the heads of each
 * model's lines (lib/waiting.ts), so a decision costs O(models). Design: docs/scheduler_design.md.
 *
 * Over 350 lines on purpose: the three policies, their numbered rules and `step()`'s executor
 * rules are one decision tree, read and reviewed together.
 */
import type { ModelLine, WaitingView } from "./waiting.ts";
import type { Priority } from "./priority.ts";

/** What a policy needs to know about one waiting job. */
export interface WaitingJob {
  readonly model: string;
  /** Arrival order. */
  readonly seq: number;
  readonly enqueuedAt: number;
  readonly priority: Priority;
}

/** A model whose container runs, starts or stops. */
export interface Resident {
  readonly model: string;
  /** Healthy and taking work (false while it starts, drains or stops). */
  readonly ready: boolean;
  /** When it became ready (ms). */
  readonly since: number;
  /** Its requests being served right now. */
  readonly inflight: number;
  /** Workers free to take one of its jobs (its `parallel` minus in-flight). */
  readonly free: number;
}

export interface SchedulerView<J extends WaitingJob = WaitingJob> {
  /** Waiting jobs, per model and class, in arrival order. */
  waiting: WaitingView<J>;
  /** The resident set: every model whose container runs, starts or stops. */
  residents: ReadonlyMap<string, Resident>;
  /**
   * The residents that must stop to make room for `model` (lib/placement.ts): empty when
   * it fits beside them. Without a memory budget, every other resident.
   */
  victimsFor(model: string): readonly string[];
  /** Containers are being stopped or started: no other placement is decided meanwhile. */
  placing: boolean;
  /** A placement was decided and waits for its victims' in-flight requests to finish. */
  switchingTo: string | null;
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
  /** A request's typical service time on `model` (ms): learned. */
  serviceMs(model: string): number;
}

export type Decision<J extends WaitingJob = WaitingJob> =
  | { kind: "serve"; job: J }
  | { kind: "swap"; to: string }
  /** `until`: decide again at this time even if nothing happens (a wait bound expires). */
  | { kind: "wait"; until?: number };

/**
 * What the executor does next; `drain` means "place once the victims' in-flight requests
 * finished". A serve carries `drainingTo` when a binding drain goes on meanwhile (another
 * resident serves); otherwise any drain decided before is dropped.
 */
export type Action<J extends WaitingJob = WaitingJob> =
  | { kind: "serve"; job: J; drainingTo?: string }
  | Exclude<Decision<J>, { kind: "serve" }>
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
 * The executor's side of every policy, shared by the dispatcher and the simulator:
 * (a) while containers stop and start, residents keep serving; no other placement is decided;
 * (b) a placement decided while its victims had requests in flight (a drain) stays decided if
 *     the policy says it binds (its target is due): no new job of a victim starts, in-flight
 *     ones finish, then the placement — unless every job for the target left meanwhile.
 *     Other residents keep serving meanwhile;
 * (c) otherwise the policy decides afresh; a placement whose victims have requests in flight
 *     becomes a drain.
 * So a swap is only certain once its victims are idle or its target is due: work for a victim
 * that arrives during a drain is served first, and nobody starves.
 */
export function step<J extends WaitingJob>(
  policy: Policy,
  view: SchedulerView<J>,
  rules: SchedulerRules,
): Action<J> {
  // A decision asks for the same victims many times (each rule, each line): compute each once.
  const victims = new Map<string, readonly string[]>();
  const victimsFor = view.victimsFor;
  view = {
    ...view,
    victimsFor: (model) => victims.get(model) ?? victims.set(model, victimsFor(model)).get(model)!,
  };
  const target = view.switchingTo;
  if (
    !view.placing && target !== null && view.waiting.line(target) !== undefined &&
    policy.binds(view, rules, target)
  ) { // (b)
    if (!busy(view, target)) return { kind: "swap", to: target };
    const others = policy(withdrawn(view, view.victimsFor(target)), rules);
    return others.kind === "serve"
      ? { ...others, drainingTo: target }
      : { kind: "drain", to: target };
  }
  const decision = policy(view, rules); // (a), (c)
  if (decision.kind === "swap" && view.placing) return WAIT;
  if (decision.kind === "swap" && busy(view, decision.to)) {
    return { kind: "drain", to: decision.to };
  }
  return decision;
}

/** Whether a victim of a placement of `target` still has requests in flight. */
function busy(view: SchedulerView<WaitingJob>, target: string): boolean {
  return view.victimsFor(target).some((model) => (view.residents.get(model)?.inflight ?? 0) > 0);
}

/** `view` with `victims` taking no new work and no placement to decide (a binding drain). */
function withdrawn<J extends WaitingJob>(
  view: SchedulerView<J>,
  victims: readonly string[],
): SchedulerView<J> {
  const residents = new Map(view.residents);
  for (const model of victims) {
    const resident = residents.get(model);
    if (resident !== undefined) residents.set(model, { ...resident, ready: false, free: 0 });
  }
  return { ...view, residents, placing: true };
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

/** The waiting lines of ready residents with a worker free: served without any swap. */
function servable<J extends WaitingJob>(view: SchedulerView<J>): ModelLine<J>[] {
  const lines: ModelLine<J>[] = [];
  for (const [model, line] of view.waiting.lines()) {
    const resident = view.residents.get(model);
    if (resident !== undefined && resident.ready && resident.free > 0) lines.push(line);
  }
  return lines;
}

/** The waiting lines of models with no container up: each needs a placement. */
function outside<J extends WaitingJob>(view: SchedulerView<J>): ModelLine<J>[] {
  const lines: ModelLine<J>[] = [];
  for (const [model, line] of view.waiting.lines()) {
    if (!view.residents.has(model)) lines.push(line);
  }
  return lines;
}

/** The model of a line (lines are never empty). */
function modelOf<J extends WaitingJob>(line: ModelLine<J>): string {
  return (line.interactive[0] ?? line.batch[0]).model;
}

/** Whether placing `line`'s model stops only residents that have nothing waiting. */
function evictsIdle<J extends WaitingJob>(view: SchedulerView<J>, line: ModelLine<J>): boolean {
  return view.victimsFor(modelOf(line)).every((model) => view.waiting.line(model) === undefined);
}

/**
 * Strict FIFO, the seed's order:
 * (1) nothing waits → wait;
 * (2) the oldest job's model is up → serve it if a worker is free, else wait;
 * (3) it needs another model → place it (after its victims' in-flight requests finished).
 * A decided placement binds: the oldest job stays the oldest.
 */
export const decideFifo: Policy = Object.assign(
  <J extends WaitingJob>(view: SchedulerView<J>): Decision<J> => {
    let head: J | undefined;
    for (const [, line] of view.waiting.lines()) {
      for (const job of headsOf(line)) if (head === undefined || job.seq < head.seq) head = job;
    }
    if (head === undefined) return WAIT; // (1)
    const resident = view.residents.get(head.model);
    if (resident !== undefined) return resident.ready && resident.free > 0 ? serve(head) : WAIT; // (2)
    return view.placing ? WAIT : { kind: "swap", to: head.model }; // (3)
  },
  { binds: () => true },
);

/**
 * Greedy collation (llama-swap, Ollama), deciding when the GPU is free: serve the resident
 * models while they have work.
 * (1) nothing waits → wait;
 * (2) a ready resident has waiting jobs and a free worker → serve the first (priority, age);
 * (3) otherwise place the model of the first waiting job whose placement stops only
 *     residents with nothing waiting.
 * A decided placement never binds: work for a victim that arrives before its requests in
 * flight finished goes first. No wait is bounded.
 */
export const decideGreedy: Policy = Object.assign(
  <J extends WaitingJob>(view: SchedulerView<J>, rules: SchedulerRules): Decision<J> => {
    if (view.waiting.size === 0) return WAIT; // (1)
    const ready = servable(view);
    if (ready.length > 0) return serve(first(ready, view.now, rules)); // (2)
    const candidates = view.placing ? [] : outside(view).filter((l) => evictsIdle(view, l));
    if (candidates.length === 0) return WAIT;
    return { kind: "swap", to: first(candidates, view.now, rules).model }; // (3)
  },
  { binds: () => false },
);

/**
 * Affinity (default): greedy, with every wait bounded and the next model chosen for the work
 * it serves per second of loading.
 * (1) nothing waits → wait;
 * (2) a waiting model fits beside the residents → place the best target among those (see
 *     `bestTarget`): nothing is stopped for it;
 * (3) a job for a model outside is *due*, and the first due job pulls a placement (stopping
 *     its victims), when
 *     (a) it waited its model's `max_wait` and its victims have been up that long too
 *         (so even adversarial traffic swaps at most once per `max_wait`), and (c) its victims
 *         do not have a backlog they clear within `max_wait` (then it is due `max_wait` later,
 *         1.5 `max_wait` if they clear it within half that, unless their line empties first), or
 *     (b) it outranks all its victims' waiting work (interactive behind a batch burst, or
 *         nothing waiting for them) and they have been up their `min_residency`;
 * (4) a ready resident has waiting jobs and a free worker → serve the first (priority, age);
 * (5) otherwise place the best target among the models whose victims have nothing waiting.
 * No placement is decided while one is under way (2, 3, 5). A decided placement binds only
 * while its target has a due job (3), which is what bounds waits. When it waits, it names the
 * time at which a job becomes due, so nothing has to poll.
 */
export const decideAffinity: Policy = Object.assign(
  <J extends WaitingJob>(view: SchedulerView<J>, rules: SchedulerRules): Decision<J> => {
    if (view.waiting.size === 0) return WAIT; // (1)
    const others = view.placing ? [] : outside(view);
    let until = Infinity;
    if (others.length > 0) {
      const roomy = others.filter((line) => view.victimsFor(modelOf(line)).length === 0);
      if (roomy.length > 0) return { kind: "swap", to: bestTarget(roomy, view, rules) }; // (2)
      const due = firstDue(others, view, rules); // (3)
      if (due.job !== undefined) return { kind: "swap", to: due.job.model };
      until = due.until;
    }
    const ready = servable(view);
    if (ready.length > 0) return serve(first(ready, view.now, rules)); // (4)
    const idle = others.filter((line) => evictsIdle(view, line));
    if (idle.length > 0) return { kind: "swap", to: bestTarget(idle, view, rules) }; // (5)
    return until === Infinity ? WAIT : { kind: "wait", until };
  },
  {
    binds(view: SchedulerView, rules: SchedulerRules, target: string): boolean {
      const line = view.waiting.line(target);
      if (line === undefined) return false;
      if (view.victimsFor(target).length === 0) return true;
      return firstDue([line], view, rules).job !== undefined;
    },
  },
);

/** The first due job among `lines` (3), and the earliest time one becomes due. */
function firstDue<J extends WaitingJob>(
  lines: ModelLine<J>[],
  view: SchedulerView<WaitingJob>,
  rules: SchedulerRules,
): { job: J | undefined; until: number } {
  const now = view.now;
  // Heads suffice: within a line an older job is due no later than a newer one.
  let due: J | undefined;
  let until = Infinity;
  for (const line of lines) {
    const victims = view.victimsFor(modelOf(line));
    for (const job of headsOf(line)) {
      const at = dueAt(job, victims, view, rules);
      if (at > now) until = Math.min(until, at);
      else if (due === undefined || before(job, due, now, rules)) due = job;
    }
  }
  return { job: due, until };
}

/**
 * The model to place next when nothing is due: among the models with work of the best rank
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

/** When rule (3) makes `job` due, given the residents its placement would stop. */
function dueAt(
  job: WaitingJob,
  victims: readonly string[],
  view: SchedulerView<WaitingJob>,
  rules: SchedulerRules,
): number {
  const now = view.now;
  const maxWait = rules.maxWaitMs(job.model);
  let stayUntil = 0;
  let residentUntil = 0;
  let victimsRank = Infinity;
  let backlogMs = 0;
  for (const model of victims) {
    const resident = view.residents.get(model);
    const since = resident?.since ?? 0;
    // (3a) A victim also stays at least as long as loading it took: a swap's cost is earned
    // back before the next one (at most half of the GPU's time goes to loading).
    stayUntil = Math.max(stayUntil, since + Math.max(maxWait, rules.loadMs(model)));
    residentUntil = Math.max(residentUntil, since + rules.minResidencyMs(model));
    const line = view.waiting.line(model);
    if (line === undefined) continue;
    for (const head of headsOf(line)) victimsRank = Math.min(victimsRank, rankOf(head, now, rules));
    const parallel = Math.max(1, (resident?.inflight ?? 0) + (resident?.free ?? 0));
    const waiting = line.interactive.length + line.batch.length;
    backlogMs = Math.max(backlogMs, (waiting * rules.serviceMs(model)) / parallel);
  }
  let byWait = Math.max(job.enqueuedAt + maxWait, stayUntil);
  // (3c) A victim's backlog that it clears within max_wait is served first: the swap away would
  // leave it waiting for a whole round trip of loads. Its end (the line empties) pulls the
  // swap through rule 5; at the latest, the job is due max_wait later, or 1.5 max_wait later
  // when the backlog clears within half a max_wait: a burst that is nearly served is not
  // left behind for a round trip (trace f's worst wait was 1.08x greedy's without it).
  if (backlogMs > 0 && backlogMs <= maxWait && now >= byWait) {
    byWait += backlogMs <= maxWait / 2 ? 1.5 * maxWait : maxWait;
  }
  if (victimsRank === 0) return byWait;
  // (3b): interactive now, or a batch job once it has aged into interactive.
  const outranksFrom = job.priority === "interactive" ? 0 : job.enqueuedAt + rules.batchAgingMs;
  return Math.min(byWait, Math.max(outranksFrom, residentUntil));
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
