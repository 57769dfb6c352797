/**
 * @module
 * The worker pool: runs the scheduler's decisions. Each resident model serves up to its
 * `parallel` jobs at once; a placement (a swap) is asked of the ModelManager only when the
 * policy says so. Every event (a job
 * arrives, finishes or leaves, the loaded model changes) calls `pump()`, which decides again.
 * Nothing here polls: an idle pool costs no CPU.
 */
import type { Clock } from "./clock.ts";
import type { Config, ModelConfig } from "./config.ts";
import {
  ApiError,
  modelRemoved,
  modelUnavailable,
  requestTimeout,
  shuttingDown,
  storeUnavailable,
  upstreamFailed,
} from "./errors.ts";
import type { SyncJournal } from "./journal.ts";
import type { StoreStatus } from "./store/status.ts";
import type { Job } from "./jobs.ts";
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import type { Lease, ModelManager, ModelSnapshot } from "./models.ts";
import { SwapFailedError } from "./swap_failures.ts";
import { JobQueue } from "./queue.ts";
import { ByteBudget } from "./byte_budget.ts";
import type { Activity } from "./activity.ts";
import { LoadTimes } from "./load_times.ts";
import { POLICIES, type Policy, type Resident, type SchedulerRules, step } from "./scheduler.ts";
import { forward, UpstreamUnreachableError } from "./upstream.ts";

export interface WorkerPoolDeps {
  config: Config;
  models: ModelManager;
  metrics: Metrics;
  log: Logger;
  clock: Clock;
  /** Where synchronous jobs' states are recorded, and whether that store answers. */
  journal: SyncJournal;
  storeStatus: StoreStatus;
  /** Finished requests, for the dashboard. */
  activity: Activity;
  policy?: Policy;
}

export class WorkerPool {
  readonly queue: JobQueue;
  /** Request bodies held by this pool's requests, within `max_queued_bytes`. */
  readonly bodies: ByteBudget;
  #config: Config;
  #modelConfigs: Map<string, ModelConfig>;
  readonly #models: ModelManager;
  readonly #metrics: Metrics;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #journal: SyncJournal;
  readonly #storeStatus: StoreStatus;
  readonly #activity: Activity;
  /** A policy given by the caller (tests, simulator) outlives config reloads. */
  readonly #fixedPolicy: Policy | null;
  #policy: Policy;
  #rules: SchedulerRules;
  readonly loadTimes: LoadTimes;
  readonly #running = new Set<Job>();
  /** Jobs in flight per model. */
  readonly #runningOn = new Map<string, number>();
  readonly #idleWaiters: (() => void)[] = [];
  #placing = false;
  /** Residents a placement under way stops: they take no new work from its decision on. */
  readonly #evicting = new Set<string>();
  /** A swap was decided; it starts once in-flight requests finished. */
  #switchingTo: string | null = null;
  #idleTimer: ReturnType<typeof setTimeout> | null = null;
  /** One timer for the earliest moment a policy asked to decide again. */
  #wake: { at: number; timer: ReturnType<typeof setTimeout> } | null = null;
  #pumping = false;
  #pumpAgain = false;
  #closed = false;
  /** Moving average of a job's service time, for Retry-After. */
  #serviceMs = 10_000;
  /** The same, per model: the scheduler weighs a model's backlog with it. */
  readonly #serviceOf = new Map<string, number>();

  constructor(deps: WorkerPoolDeps) {
    this.#config = deps.config;
    this.#modelConfigs = new Map(deps.config.models.map((m) => [m.id, m]));
    this.#models = deps.models;
    this.#metrics = deps.metrics;
    this.#log = deps.log;
    this.#clock = deps.clock;
    this.#journal = deps.journal;
    this.#storeStatus = deps.storeStatus;
    this.#activity = deps.activity;
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
          this.#logRequest(job, error.status, error.status === 499 ? undefined : error.code);
        },
        onTimedOut: (job) => {
          this.#metrics.failedRequests++;
          this.#logRequest(job, 504, "request_timeout");
        },
      },
    });
    this.bodies = new ByteBudget(
      deps.config.maxQueuedBytes,
      deps.config.maxQueueShare,
      () => this.#retryAfterS(),
    );
    this.#models.onChange(() => this.pump());
    // Every swap teaches the ETA and counts, whoever asked for it (requests, admin, preload),
    // and its time shows in the request lines of those who waited for it.
    this.#models.onSwap((timings) => {
      const total = timings.stopMs + timings.startMs + timings.healthyMs;
      for (const job of this.queue.waiting().jobsOf(timings.to)) job.swapMs += total;
      this.loadTimes.observe(timings.to, timings.startMs + timings.healthyMs);
      this.#metrics.swaps.inc({ from: timings.from ?? "none", to: timings.to });
      this.#metrics.swapSeconds.observe(
        { to: timings.to },
        (timings.stopMs + timings.startMs + timings.healthyMs) / 1000,
      );
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
      serviceMs: (model) => this.#serviceOf.get(model) ?? this.#serviceMs,
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
      this.#logRequest(job, error.status, error.code);
    }
  }

  /** Jobs being served by a backend right now. */
  get active(): number {
    return this.#running.size;
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
    this.#metrics.totalRequests++;
    this.#journal.add(job).catch((err) => {
      if (job.state === "queued") job.cancel(storeUnavailable(String(err?.message ?? err)));
    });
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
    const position = this.queue.positionOf(job);
    const snap = this.#models.snapshot();
    const eta = `eta=${Math.round(this.estimateStartMs(job, snap) / 1000)}s`;
    const starting = snap.residents.find((r) => r.phase === "starting");
    if (starting === undefined) return `queued position=${position} ${eta}`;
    const seconds = Math.round((this.#clock.now() - starting.since) / 1000);
    if (starting.model === job.model) {
      return `loading model ${job.model} ${seconds}s position=${position} ${eta}`;
    }
    return `queued position=${position} ${eta} (loading model ${starting.model} ${seconds}s)`;
  }

  /**
   * Estimated ms until `job` starts: the rest of its model's load in progress (or a whole
   * learned load after the running requests), then its turn among its model's waiting jobs.
   * An estimate: other models' due jobs may still go first.
   */
  estimateStartMs(job: Job, snap: ModelSnapshot = this.#models.snapshot()): number {
    const now = this.#clock.now();
    const resident = snap.residents.find((r) => r.model === job.model);
    let ms = 0;
    if (resident?.phase !== "ready") {
      const load = this.loadTimes.estimate(job.model);
      ms += resident?.phase === "starting"
        ? Math.max(0, load - (now - resident.since))
        : load + (this.#running.size > 0 ? this.#serviceMs / 2 : 0);
    }
    const ahead = this.queue.aheadOf(job) + (this.#runningOn.get(job.model) ?? 0);
    const turns = Math.floor(ahead / this.#parallel(job.model));
    return Math.round(ms + turns * this.#serviceMs);
  }

  /** Requests `model` serves at once. */
  #parallel(model: string): number {
    return this.#modelConfigs.get(model)?.parallel ?? this.#config.numWorkers;
  }

  /** The queue as operators see it (`GET /queue`), its first `limit` jobs with their ETAs. */
  queueView(limit = Infinity) {
    const snap = this.#models.snapshot();
    const now = this.#clock.now();
    const ready = snap.residents.filter((r) => r.phase === "ready");
    return {
      policy: this.#config.scheduler.policy,
      current_model: snap.loaded,
      phase: snap.phase,
      loading: snap.target,
      switching_to: this.#switchingTo,
      resident: snap.residents.map((r) => ({
        model: r.model,
        phase: r.phase,
        memory_gb: r.memoryGb,
        running: this.#runningOn.get(r.model) ?? 0,
        parallel: this.#parallel(r.model),
      })),
      memory_budget_gb: this.#config.memoryBudgetGb,
      workers: {
        total: ready.length === 0
          ? this.#config.numWorkers
          : ready.reduce((n, r) => n + this.#parallel(r.model), 0),
        busy: this.#running.size,
      },
      jobs: this.queue.list().slice(0, limit).map((job, index) => ({
        id: job.id,
        model: job.model,
        priority: job.priority,
        position: index + 1,
        waited_s: Math.round((now - job.enqueuedAt) / 100) / 10,
        eta_s: Math.round(this.estimateStartMs(job, snap) / 1000),
      })),
      load_times: Object.fromEntries(this.#config.models.map((m) => [m.id, {
        seconds: Math.round(this.loadTimes.estimate(m.id) / 100) / 10,
        learned: this.loadTimes.learned(m.id),
      }])),
    };
  }

  /** Requests being served right now, oldest first (the dashboard). */
  runningView() {
    const now = this.#clock.now();
    return [...this.#running].map((job) => ({
      id: job.id,
      model: job.model,
      priority: job.priority,
      stream: job.stream,
      running_s: Math.round((now - (job.startedAt ?? now)) / 100) / 10,
    }));
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
    if (this.#idleTimer !== null) clearTimeout(this.#idleTimer);
    for (const job of this.queue.failAll(shuttingDown())) {
      this.#metrics.failedRequests++;
      this.#logRequest(job, 503, "shutting_down");
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
        const inflight = this.#runningOn.get(r.model) ?? 0;
        const ready = r.phase === "ready" && !this.#evicting.has(r.model);
        residents.set(r.model, {
          model: r.model,
          ready,
          since: r.since,
          inflight,
          free: ready ? Math.max(0, this.#parallel(r.model) - inflight) : 0,
        });
      }
      const action = step(this.#policy, {
        waiting: this.queue.waiting(),
        residents,
        victimsFor: (model) => this.#models.victimsFor(model),
        placing: this.#placing || snap.busy,
        switchingTo: this.#switchingTo,
        now: this.#clock.now(),
      }, this.#rules);
      switch (action.kind) {
        case "wait":
          if (action.until !== undefined) this.#wakeAt(action.until);
          this.#armIdleUnload(snap);
          return;
        case "drain":
          this.#switchingTo = action.to;
          return;
        case "swap":
          this.#switchingTo = null;
          for (const model of this.#models.victimsFor(action.to)) this.#evicting.add(model);
          this.#swap(action.to);
          break;
        case "serve": {
          this.#switchingTo = action.drainingTo ?? null;
          const job = action.job;
          const lease = this.#models.lease(job.model);
          if (lease === null) return; // the model changed under us; its change event pumps again
          this.queue.take(job);
          job.transition("running");
          this.#running.add(job);
          this.#runningOn.set(job.model, (this.#runningOn.get(job.model) ?? 0) + 1);
          this.#metrics.observeConcurrency(this.#running.size);
          this.#run(job, lease);
        }
      }
    }
  }

  /**
   * Unloads each resident with a `ttl` once nothing waited for or ran on it that long. One
   * timer, for the earliest.
   */
  #armIdleUnload(snap: ModelSnapshot): void {
    if (this.#idleTimer !== null) clearTimeout(this.#idleTimer);
    this.#idleTimer = null;
    if (this.#closed) return;
    const expiries = this.#idleExpiries(snap);
    if (expiries.length === 0) return;
    const at = Math.min(...expiries.map((e) => e.at));
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = null;
      const now = this.#clock.now();
      for (const { model, at, ttlMs } of this.#idleExpiries(this.#models.snapshot())) {
        if (now < at) continue;
        this.#log.info("idle_unload", { model, ttl_s: ttlMs / 1000 });
        this.#models.unload("idle", model).catch((err) =>
          this.#log.warn("idle_unload_failed", { model, error: String(err) })
        );
      }
      this.pump();
    }, Math.max(0, at - this.#clock.now()));
  }

  /** Ready residents with a `ttl`, nothing waiting and nothing running, and when they expire. */
  #idleExpiries(snap: ModelSnapshot) {
    const expiries: { model: string; at: number; ttlMs: number }[] = [];
    for (const r of snap.residents) {
      const ttlMs = this.#modelConfigs.get(r.model)?.ttlMs ?? null;
      const idle = r.phase === "ready" && this.queue.waiting().line(r.model) === undefined &&
        (this.#runningOn.get(r.model) ?? 0) === 0;
      if (ttlMs !== null && idle) expiries.push({ model: r.model, at: r.lastUsed + ttlMs, ttlMs });
    }
    return expiries;
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

  async #swap(to: string): Promise<void> {
    this.#placing = true;
    try {
      await this.#models.place(to);
    } catch (err) {
      const error = err instanceof SwapFailedError
        ? modelUnavailable(err.code, err.message, err)
        : modelUnavailable("model_load_failed", `Model '${to}' failed to load: ${err}`, err);
      this.#failWaiting(to, error);
    } finally {
      this.#placing = false;
      this.#evicting.clear();
      this.pump();
    }
  }

  async #run(job: Job, lease: Lease): Promise<void> {
    const model = this.#modelConfigs.get(job.model)!;
    job.attempts++;
    job.startedAt ??= this.#clock.now();
    let status = 0;
    let retry = false;
    try {
      const { response, done } = await forward(job, model);
      // fetch sent a copy of the body (a Request copies its bytes): that copy is garbage now.
      this.bodies.memory.freshGarbage(job.body.byteLength);
      status = response.status;
      job.settle({ kind: "response", response });
      await done;
      this.#finish(job, response.ok && !job.signal.aborted ? "done" : "failed");
    } catch (err) {
      if (err instanceof UpstreamUnreachableError && !job.signal.aborted) {
        // Nothing reached the client yet: find out whether the container died, then retry.
        await this.#models.reportUnreachable(job.model);
        const known = this.#modelConfigs.has(job.model); // a reload may have removed it
        if (job.attempts < this.#config.maxAttempts && !job.signal.aborted && known) {
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
      const left = (this.#runningOn.get(job.model) ?? 1) - 1;
      if (left === 0) this.#runningOn.delete(job.model);
      else this.#runningOn.set(job.model, left);
      lease.release();
      if (retry) this.queue.requeue(job);
      else {
        // A client that left mid-answer is a 499 whatever the backend had answered.
        const logged = job.state === "cancelled" && job.clientLeftAt !== null ? 499 : status;
        this.#logRequest(job, logged, this.#failureReason(job, status));
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
    const clientGone = job.signal.aborted && !job.timedOut;
    this.#finish(job, clientGone ? "cancelled" : state);
    job.settle({ kind: "error", error });
    return clientGone ? 499 : error.status;
  }

  #finish(job: Job, state: "done" | "failed" | "cancelled" | "dead"): void {
    const clientGone = job.signal.aborted && !job.timedOut;
    const final = clientGone ? "cancelled" : state;
    job.transition(final);
    if (final === "done") this.#metrics.successfulRequests++;
    else if (final === "cancelled") this.#metrics.cancelledRequests++;
    else this.#metrics.failedRequests++;
    if (job.startedAt !== null) {
      const took = this.#clock.now() - job.startedAt;
      this.#serviceMs = 0.8 * this.#serviceMs + 0.2 * took;
      const mine = this.#serviceOf.get(job.model);
      this.#serviceOf.set(job.model, mine === undefined ? took : 0.8 * mine + 0.2 * took);
    }
  }

  #retryAfterS(): number {
    const perWorker = Math.ceil(this.queue.size / this.#config.numWorkers);
    return Math.min(60, Math.max(1, Math.ceil((this.#serviceMs * perWorker) / 1000)));
  }

  #logRequest(job: Job, status: number, reason?: string): void {
    const now = this.#clock.now();
    const model = { model: job.model };
    this.#metrics.requests.inc({ ...model, status: String(status) });
    this.#metrics.requestSeconds.observe(model, (now - job.enqueuedAt) / 1000);
    if (job.startedAt !== null) {
      this.#metrics.queueWaitSeconds.observe(model, (job.startedAt - job.enqueuedAt) / 1000);
    }
    if (reason !== undefined) this.#metrics.failures.inc({ reason });
    if (job.usage !== null) {
      this.#metrics.tokens.inc({ ...model, kind: "prompt" }, job.usage.prompt);
      this.#metrics.tokens.inc({ ...model, kind: "completion" }, job.usage.completion);
    }
    const waitMs = (job.startedAt ?? now) - job.enqueuedAt;
    this.#activity.request({
      id: job.id,
      model: job.model,
      path: job.path,
      key: job.owner,
      status,
      reason: reason ?? null,
      stream: job.stream,
      priority: job.priority,
      at: now,
      waitMs,
      swapMs: job.swapMs,
      totalMs: now - job.enqueuedAt,
      promptTokens: job.usage?.prompt ?? null,
      completionTokens: job.usage?.completion ?? null,
    });
    this.#log.info("request", {
      id: job.id,
      model: job.model,
      key: job.owner ?? undefined,
      path: job.path,
      stream: job.stream,
      wait_ms: waitMs,
      swap_ms: job.swapMs,
      attempts: job.attempts,
      prompt_tokens: job.usage?.prompt,
      completion_tokens: job.usage?.completion,
      // A warm slot (or a restored KV cache) shows here.
      cached_tokens: job.usage?.cached ?? undefined,
      status,
      ms: now - job.enqueuedAt,
      // When the client left (ms after it arrived) and how much of the answer it had by then.
      client_left_ms: job.clientLeftAt === null ? undefined : job.clientLeftAt - job.enqueuedAt,
      chunks: job.clientLeftAt === null || !job.stream ? undefined : job.chunksSent,
    });
  }
}
