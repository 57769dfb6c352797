/**
 * @module
 * The dispatcher: carries out the scheduler's decisions. Each resident model serves up to its
 * `parallel` jobs at once; a placement (a swap) is asked of the swap manager only when the
 * policy says so. Every event (a job arrives, finishes or leaves, the resident set changes)
 * calls `pump()`, which decides again. Nothing here polls: an idle dispatcher costs no CPU.
 * What runs where is read from the swap manager's snapshot; the dispatcher only remembers
 * its own decisions (a drain under way, the jobs it runs).
 *
 * Over 350 lines on purpose: deciding and running what was decided share the running set, the
 * retries and the wake-ups; apart, each half would hand all of them back to the other.
 */
import type { Clock } from "./clock.ts";
import type { Config, ModelConfig } from "./config_types.ts";
import {
  ApiError,
  messageOf,
  modelRemoved,
  requestTimeout,
  shuttingDown,
  storeUnavailable,
  upstreamFailed,
} from "./errors.ts";
import { startEstimateMs, waitLine } from "./eta.ts";
import type { SyncJournal } from "./journal.ts";
import type { StoreStatus } from "./store/status.ts";
import type { Job } from "./jobs.ts";
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import type { ModelSnapshot, ResidentView, SwapManager } from "./swap_manager.ts";
import type { Lease } from "./residents.ts";
import { SwapFailedError, swapFailureError } from "./swap_failures.ts";
import { JobQueue } from "./queue.ts";
import { ByteBudget } from "./byte_budget.ts";
import type { Activity } from "./activity.ts";
import { IdleUnload } from "./idle_unload.ts";
import { LoadTimes } from "./load_times.ts";
import { RequestLog } from "./request_log.ts";
import { ServiceTimes } from "./service_times.ts";
import { POLICIES, type Policy, type Resident, type SchedulerRules, step } from "./scheduler.ts";
import { forward, UpstreamUnreachableError } from "./upstream.ts";
import type { BackendClient } from "./backend_client.ts";

export interface DispatcherDeps {
  config: Config;
  models: SwapManager;
  metrics: Metrics;
  log: Logger;
  clock: Clock;
  /** Where synchronous jobs' states are recorded, and whether that store answers. */
  journal: SyncJournal;
  storeStatus: StoreStatus;
  /** Finished requests, for the dashboard. */
  activity: Activity;
  /** The connections jobs are forwarded on. */
  backends: BackendClient;
  policy?: Policy;
}

export class Dispatcher {
  readonly queue: JobQueue;
  /** Request bodies held by this dispatcher's requests, within `max_queued_bytes`. */
  readonly bodies: ByteBudget;
  readonly loadTimes: LoadTimes;
  readonly #serviceTimes = new ServiceTimes();
  #config: Config;
  #modelConfigs: Map<string, ModelConfig>;
  readonly #models: SwapManager;
  readonly #metrics: Metrics;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #journal: SyncJournal;
  readonly #backends: BackendClient;
  readonly #storeStatus: StoreStatus;
  readonly #requests: RequestLog;
  readonly #idle: IdleUnload;
  /** A policy given by the caller (tests, simulator) outlives config reloads. */
  readonly #fixedPolicy: Policy | null;
  #policy: Policy;
  #rules: SchedulerRules;
  readonly #running = new Set<Job>();
  readonly #idleWaiters: (() => void)[] = [];
  /** A swap was decided; it starts once in-flight requests finished. */
  #switchingTo: string | null = null;
  /** One timer for the earliest moment a policy asked to decide again. */
  #wake: { at: number; timer: ReturnType<typeof setTimeout> } | null = null;
  #pumping = false;
  #pumpAgain = false;
  #closed = false;

  constructor(deps: DispatcherDeps) {
    this.#config = deps.config;
    this.#modelConfigs = new Map(deps.config.models.map((m) => [m.id, m]));
    this.#models = deps.models;
    this.#metrics = deps.metrics;
    this.#log = deps.log;
    this.#clock = deps.clock;
    this.#journal = deps.journal;
    this.#journal.onFailedAdds((ids, err) => this.#refuseUnrecorded(ids, err));
    this.#backends = deps.backends;
    this.#storeStatus = deps.storeStatus;
    this.#requests = new RequestLog(deps);
    this.#fixedPolicy = deps.policy ?? null;
    this.#policy = deps.policy ?? POLICIES[deps.config.scheduler.policy];
    this.loadTimes = new LoadTimes(deps.config.models);
    this.#rules = this.#rulesFor(deps.config);
    this.queue = new JobQueue(deps.config.queueSize, {
      timeoutS: deps.config.requestTimeoutMs / 1000,
      retryAfterS: () => this.#retryAfterS(),
      ownerShare: deps.config.maxQueueShare,
      hooks: {
        onChange: () => this.pump(),
        onCancelled: (job, error) => {
          this.#metrics.cancelledRequests++;
          // A client that left is no failure; an operator's cancel is, with its reason.
          this.#requests.ended(job, error.status, error.status === 499 ? undefined : error.code);
        },
        onTimedOut: (job) => {
          this.#metrics.failedRequests++;
          this.#requests.ended(job, 504, "request_timeout");
        },
      },
    });
    this.bodies = new ByteBudget(
      deps.config.maxQueuedBytes,
      deps.config.maxQueueShare,
      () => this.#retryAfterS(),
    );
    this.#idle = new IdleUnload({
      models: deps.models,
      clock: deps.clock,
      log: deps.log,
      ttlOf: (model) => this.#modelConfigs.get(model)?.ttlMs ?? null,
      hasWaiting: (model) => this.queue.waiting().line(model) !== undefined,
      pump: () => this.pump(),
    });
    this.#models.onChange(() => this.pump());
    // Every swap teaches the ETA and counts, whoever asked for it (requests, admin, preload),
    // and its time shows in the request lines of those who waited for it.
    this.#models.onSwap((timings) => {
      const total = timings.stopMs + timings.startMs + timings.healthyMs;
      for (const job of this.queue.waiting().jobsOf(timings.to)) job.swapMs += total;
      this.loadTimes.observe(timings.to, timings.startMs + timings.healthyMs);
      this.#metrics.swaps.inc({ from: timings.from ?? "none", to: timings.to });
      this.#metrics.swapSeconds.observe({ to: timings.to }, total / 1000);
    });
    // A model that failed to load fails its waiting requests before the lock is let go, so
    // that no decision places it again for them.
    this.#models.onSwapFailed((model, failure) => {
      this.#failWaiting(model, swapFailureError(model, failure));
    });
  }

  #rulesFor(config: Config): SchedulerRules {
    const scheduler = config.scheduler;
    const maxWait = new Map(config.models.map((m) => [m.id, m.maxWaitMs]));
    const maxWaitMs = (model: string) => maxWait.get(model) ?? scheduler.maxWaitMs;
    return {
      maxWaitMs,
      minResidencyMs: (model) =>
        Math.min(scheduler.minResidencyMs ?? this.loadTimes.estimate(model), maxWaitMs(model)),
      batchAgingMs: scheduler.batchAgingMs,
      loadMs: (model) => this.loadTimes.estimate(model),
      serviceMs: (model) => this.#serviceTimes.of(model),
    };
  }

  /**
   * Moves to a reloaded config: its models, scheduler and limits apply from the next
   * decision on. Requests waiting for a model that is gone get 404; running ones finish.
   */
  reconfigure(config: Config): void {
    const removed = [...this.#modelConfigs.keys()].filter((id) =>
      !config.models.some((m) => m.id === id)
    );
    this.#config = config;
    this.#modelConfigs = new Map(config.models.map((m) => [m.id, m]));
    this.#policy = this.#fixedPolicy ?? POLICIES[config.scheduler.policy];
    this.loadTimes.reconfigure(config.models);
    this.#rules = this.#rulesFor(config);
    this.queue.reconfigure({
      capacity: config.queueSize,
      ownerShare: config.maxQueueShare,
      timeoutS: config.requestTimeoutMs / 1000,
    });
    this.bodies.reconfigure(config.maxQueuedBytes, config.maxQueueShare);
    for (const model of removed) this.#failWaiting(model, modelRemoved(model));
    this.pump();
  }

  /** Answers every request waiting for `model` with `error`. */
  #failWaiting(model: string, error: ApiError): void {
    for (const job of this.queue.failModel(model, error)) {
      this.#metrics.failedRequests++;
      this.#requests.ended(job, error.status, error.code);
    }
  }

  /** Jobs being served by a backend right now, oldest first. */
  running(): readonly Job[] {
    return [...this.#running];
  }

  /** False once shutting down: nothing new is taken, here or for a peer. */
  get accepting(): boolean {
    return !this.#closed;
  }

  /** How many jobs are being served by a backend right now. */
  get active(): number {
    return this.#running.size;
  }

  /** A swap the policy decided, waiting for its victims' requests to finish, or null. */
  get switchingTo(): string | null {
    return this.#switchingTo;
  }

  /**
   * Queues a job and dispatches at once if the policy allows. Its store record is written
   * alongside, off the request's path; if that write fails while it still waits, it is
   * answered 503 instead.
   * @throws {ApiError} 429 when the queue is full, 503 while shutting down or when the store
   * is unreachable.
   */
  submit(job: Job): void {
    if (this.#closed) throw shuttingDown();
    this.#assertKnown(job.model);
    const storeError = this.#storeStatus.error;
    if (storeError !== null) throw storeUnavailable(storeError.message);
    this.queue.admit(job);
    this.bodies.memory.admitted(this.queue.size);
    this.#metrics.totalRequests++;
    this.#journal.add(job);
  }

  /** Jobs the store could not record are refused while they still wait (503). */
  #refuseUnrecorded(ids: ReadonlySet<string>, err: unknown): void {
    const error = storeUnavailable(messageOf(err));
    for (const job of this.queue.list()) {
      if (ids.has(job.id) && job.state === "queued") job.cancel(error);
    }
  }

  /** Queues a batch line (no store journal: the batch runner owns its record). */
  submitBatch(job: Job): void {
    if (this.#closed) throw shuttingDown();
    this.#assertKnown(job.model);
    this.queue.admitBatchLine(job);
  }

  /** A request resolved against a config that a reload just replaced. */
  #assertKnown(model: string): void {
    if (!this.#modelConfigs.has(model)) throw modelRemoved(model);
  }

  /** A line for a waiting client: its place, what the GPU is doing, and an ETA. */
  describeWait(job: Job): string {
    const snap = this.#models.snapshot();
    const etaMs = this.estimateStartMs(job, snap);
    return waitLine(job, this.queue.positionOf(job), etaMs, snap, this.#clock.now());
  }

  /** Estimated ms until `job` starts (lib/eta.ts). */
  estimateStartMs(job: Job, snap: ModelSnapshot = this.#models.snapshot()): number {
    return startEstimateMs({
      now: this.#clock.now(),
      resident: snap.residents.find((r) => r.model === job.model),
      loadMs: this.loadTimes.estimate(job.model),
      serviceMs: this.#serviceTimes.overallMs,
      running: this.#running.size,
      ahead: this.queue.aheadOf(job),
      parallel: this.parallelOf(job.model),
    });
  }

  /** Workers free on a resident: none unless it is ready and no placement is stopping it. */
  freeWorkersOn(r: ResidentView): number {
    if (r.phase !== "ready" || r.evicting) return 0;
    return Math.max(0, this.parallelOf(r.model) - r.inflight);
  }

  /** Requests `model` serves at once. */
  parallelOf(model: string): number {
    return this.#modelConfigs.get(model)?.parallel ?? this.#config.numWorkers;
  }

  /** Decide and act until the policy says wait. Re-entrant calls are folded into one. */
  pump(): void {
    if (this.#pumping) {
      this.#pumpAgain = true;
      return;
    }
    this.#pumping = true;
    try {
      do {
        this.#pumpAgain = false;
        this.#dispatch();
      } while (this.#pumpAgain);
    } finally {
      this.#pumping = false;
    }
  }

  /**
   * Stops taking work: waiting jobs get 503, in-flight ones may finish within `graceMs`;
   * those still running then are cancelled. Resolves true when all finished in time.
   */
  async shutdown(graceMs: number): Promise<boolean> {
    this.#closed = true;
    if (this.#wake !== null) clearTimeout(this.#wake.timer);
    this.#idle.stop();
    this.bodies.memory.stop();
    for (const job of this.queue.failAll(shuttingDown())) {
      this.#metrics.failedRequests++;
      this.#requests.ended(job, 503, "shutting_down");
    }
    if (this.#running.size === 0) return true;
    const idle = new Promise<boolean>((resolve) => this.#idleWaiters.push(() => resolve(true)));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<boolean>((resolve) =>
      timer = setTimeout(() => resolve(false), graceMs)
    );
    const finished = await Promise.race([idle, late]);
    clearTimeout(timer);
    for (const job of this.#running) job.cancel(shuttingDown());
    return finished;
  }

  #dispatch(): void {
    while (!this.#closed) {
      const snap = this.#models.snapshot();
      const residents = new Map<string, Resident>();
      for (const r of snap.residents) {
        residents.set(r.model, {
          model: r.model,
          ready: r.phase === "ready" && !r.evicting,
          since: r.since,
          inflight: r.inflight,
          free: this.freeWorkersOn(r),
        });
      }
      const action = step(this.#policy, {
        waiting: this.queue.waiting(),
        residents,
        victimsFor: (model) => this.#models.victimsFor(model),
        placing: snap.busy,
        switchingTo: this.#switchingTo,
        now: this.#clock.now(),
      }, this.#rules);
      switch (action.kind) {
        case "wait":
          // step() says "drain" for as long as a drain goes on: a wait means none does (its
          // target's requests all left), and /queue must not name a switch that is off.
          this.#switchingTo = null;
          if (action.until !== undefined) this.#wakeAt(action.until);
          this.#idle.arm(snap);
          return;
        case "drain":
          this.#switchingTo = action.to;
          return;
        case "swap":
          this.#switchingTo = null;
          this.#place(action.to);
          // The lock is held from that call on; a refused placement (a model the manager no
          // longer knows) must not make this loop decide the same swap forever.
          if (!this.#models.busy) return;
          break;
        case "serve": {
          this.#switchingTo = action.drainingTo ?? null;
          const job = action.job;
          const lease = this.#models.lease(job.model);
          if (lease === null) return; // the model changed under us; its change event pumps again
          this.queue.take(job);
          job.transition("running");
          this.#running.add(job);
          this.#metrics.observeConcurrency(this.#running.size);
          this.#run(job, lease);
        }
      }
    }
  }

  /**
   * Asks for a placement. A failed load reaches the waiting requests through onSwapFailed,
   * under the lock; anything else that goes wrong (a bug) is logged and answers them too.
   */
  #place(model: string): void {
    this.#models.place(model).catch((err) => {
      if (err instanceof SwapFailedError) return;
      this.#log.error("place_failed", { model, error: messageOf(err) });
      this.#failWaiting(model, swapFailureError(model, err));
    });
  }

  #wakeAt(at: number): void {
    if (this.#wake !== null && this.#wake.at <= at) return;
    if (this.#wake !== null) clearTimeout(this.#wake.timer);
    const timer = setTimeout(() => {
      this.#wake = null;
      this.pump();
    }, Math.max(0, at - this.#clock.now()));
    this.#wake = { at, timer };
  }

  async #run(job: Job, lease: Lease): Promise<void> {
    const model = this.#modelConfigs.get(job.model)!;
    job.attempts++;
    job.startedAt ??= this.#clock.now();
    let status = 0;
    let retry = false;
    try {
      const { response, done } = await forward(this.#backends, job, model);
      status = response.status;
      job.settle({ kind: "response", response });
      await done;
      this.#finish(job, response.ok && !job.signal.aborted ? "done" : "failed");
    } catch (err) {
      if (err instanceof UpstreamUnreachableError && !job.signal.aborted) {
        // Nothing reached the client yet: find out whether the container died, then retry.
        await this.#models.reportUnreachable(job.model);
        const known = this.#modelConfigs.has(job.model); // a reload may have removed it
        if (job.clientLeftAt !== null && !job.signal.aborted) {
          // Its client left, and the job ran on only because its model finishes on disconnect:
          // a retry (a reload, if the container died) would serve nobody.
          job.cancel();
          status = this.#fail(job, this.#errorFor(job, err));
        } else if (job.attempts < this.#config.maxAttempts && !job.signal.aborted && known) {
          this.#log.warn("retry", { id: job.id, model: job.model, attempt: job.attempts });
          retry = true;
        } else {
          this.#metrics.deadLetters++;
          const error = upstreamFailed(`${err.message} after ${job.attempts} attempts`);
          status = this.#fail(job, error, "dead");
        }
      } else {
        status = this.#fail(job, this.#errorFor(job, err));
      }
    } finally {
      this.#running.delete(job);
      lease.release();
      if (retry) this.queue.requeue(job);
      else {
        // A client that left mid-answer is a 499 whatever the backend had answered.
        const logged = job.state === "cancelled" && job.clientLeftAt !== null ? 499 : status;
        this.#requests.ended(job, logged, this.#failureReason(job, status));
      }
      if (this.#running.size === 0) { for (const wake of this.#idleWaiters.splice(0)) wake(); }
      this.pump();
    }
  }

  /** Why a finished job counts as failed (for lqp_failures_total), or undefined. */
  #failureReason(job: Job, status: number): string | undefined {
    if (job.state !== "failed" && job.state !== "dead") return undefined;
    if (job.timedOut) return "request_timeout";
    return status === 502 ? "upstream_unreachable" : `backend_${status}`;
  }

  #errorFor(job: Job, err: unknown): ApiError {
    if (job.timedOut) return requestTimeout(this.#config.requestTimeoutMs / 1000);
    // Cancelled with a reason its client should hear (shutdown_grace ran out), as a stream is.
    if (err instanceof ApiError) return err;
    return upstreamFailed(`Forwarding to model '${job.model}' failed: ${err}`, err);
  }

  /** Ends a job that never got a response; returns the status the client sees. */
  #fail(job: Job, error: ApiError, state: "failed" | "dead" = "failed"): number {
    const clientGone = leftEarly(job);
    this.#finish(job, clientGone ? "cancelled" : state);
    job.settle({ kind: "error", error });
    return clientGone ? 499 : error.status;
  }

  #finish(job: Job, state: "done" | "failed" | "cancelled" | "dead"): void {
    const clientGone = leftEarly(job);
    const final = clientGone ? "cancelled" : state;
    job.transition(final);
    if (final === "done") this.#metrics.successfulRequests++;
    else if (final === "cancelled") this.#metrics.cancelledRequests++;
    else this.#metrics.failedRequests++;
    if (job.startedAt !== null) {
      this.#serviceTimes.observe(job.model, this.#clock.now() - job.startedAt);
    }
  }

  #retryAfterS(): number {
    return this.#serviceTimes.retryAfterS(this.queue.size, this.#config.numWorkers);
  }
}

/**
 * Whether a job ended because its client went away: cancelled after its client left. A job cut
 * by the shutdown grace or a timeout did not (its client got an answer, and is counted so).
 */
function leftEarly(job: Job): boolean {
  return job.signal.aborted && job.clientLeftAt !== null && !job.timedOut;
}
