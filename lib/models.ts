/**
 * @module
 * ModelManager: the sole owner of "which models run". It holds the resident set: every
 * configured model has a phase (stopped → starting → ready → draining → stopping → stopped),
 * changed only through `#move()` and its transition table. Placements (start a model, first
 * stopping the fewest least-recently-used residents that make room, lib/placement.ts),
 * unloads and start-up reconciling are serialized by one lock; requests on other residents
 * go on meanwhile. Invariant: the declared memory of running containers stays within
 * `memory_budget` (without one: one model at a time) and no two share a backend port.
 * It never touches a container that config.yml does not name.
 */
import { messageOf } from "./errors.ts";
import type { Clock } from "./clock.ts";
import type { ModelConfig } from "./config_types.ts";
import type { ContainerEvent, Docker } from "./docker.ts";
import { SPEC_LABEL } from "./container_spec.ts";
import { ensureContainer } from "./provisioning.ts";
import {
  assertRunning,
  ContainerExitedError,
  describeFailure,
  SwapFailedError,
} from "./swap_failures.ts";
import { delay, isReadyAnswer, pollUntilHealthy } from "./health.ts";
import type { Activity } from "./activity.ts";
import type { Logger } from "./log.ts";
import { type Capacity, capacityOf, fitsTogether, type Occupant, victimsFor } from "./placement.ts";
import type { KvOutcome, KvStatus, SlotKeeper } from "./kv_slots.ts";
import { shortHash } from "./short_hash.ts";

/** What one model's container is doing. */
export type ModelPhase = "stopped" | "starting" | "ready" | "draining" | "stopping";

/** The only moves a phase makes; `#move()` refuses any other (a bug, not a user error). */
const TRANSITIONS: Readonly<Record<ModelPhase, readonly ModelPhase[]>> = {
  stopped: ["starting"],
  // stopped: an adopted container that never became healthy and exited on its own.
  starting: ["ready", "stopping", "stopped"],
  // stopped: the container died under it (crash, OOM, someone's docker stop).
  ready: ["draining", "stopped"],
  draining: ["stopping", "stopped"],
  stopping: ["stopped"],
};

/** What the resident set is doing as a whole (the seed's single-model view of it). */
export type SetPhase = "idle" | "reconciling" | "stopping" | "starting" | "ready";

/** What one model's container is doing, as `/v1/models` and the dashboard tell it. */
export type ModelState = "loaded" | "loading" | "stopped";

export interface ResidentSnapshot {
  model: string;
  phase: Exclude<ModelPhase, "stopped">;
  /** When it entered this phase (clock ms). */
  since: number;
  /** Requests it serves right now. */
  inflight: number;
  /** Last time a request started or ended on it, or it became ready (clock ms). */
  lastUsed: number;
  /** Declared GB, or null without a budget. */
  memoryGb: number | null;
}

export interface ModelSnapshot {
  /** The most recently loaded model that is up and healthy, or null (the seed's current_model). */
  loaded: string | null;
  phase: SetPhase;
  /** The model a placement under way starts, or null. */
  target: string | null;
  /** When the set last changed (clock ms). */
  since: number;
  inflight: number;
  /** A placement, unload or reconcile holds the lock: no other is decided meanwhile. */
  busy: boolean;
  /** Every model that is not stopped, most recently loaded first. */
  residents: ResidentSnapshot[];
}

export interface SwapTimings {
  /** The residents stopped to make room, joined with ",", or null. */
  from: string | null;
  evicted: string[];
  to: string;
  stopMs: number;
  startMs: number;
  healthyMs: number;
}

export interface Lease {
  release(): void;
}

export interface ModelManagerOptions {
  clock: Clock;
  log: Logger;
  /** Seconds Docker waits after SIGTERM before SIGKILL. */
  stopTimeoutS: number;
  /** Log lines quoted in a failed swap's message. */
  logTailLines?: number;
  /** How often a model still loading is logged (default 10 s). */
  loadProgressMs?: number;
  /** Where swaps and unloads are recorded for the dashboard. */
  activity: Activity;
  /** GB the running models may declare together; null: one model at a time. */
  memoryBudgetGb: number | null;
  /** Saves slot KV caches before a stop and restores them after a start (`kv_cache`). */
  slots?: SlotKeeper | null;
}

interface Residency {
  phase: ModelPhase;
  since: number;
  leases: number;
  lastUsed: number;
  drainWaiters: (() => void)[];
}

export class ModelManager {
  readonly #docker: Docker;
  #models: Map<string, ModelConfig>;
  #byContainer: Map<string, ModelConfig>;
  #capacity: Capacity;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #stopTimeoutS: number;
  readonly #logTailLines: number;
  readonly #loadProgressMs: number;
  readonly #activity: Activity;
  readonly #kv: SlotKeeper | null;
  /** Every model that is not stopped; a stopped one has no entry. */
  readonly #residents = new Map<string, Residency>();
  /** The model a placement under way starts. */
  #target: string | null = null;
  #reconciling = false;
  /** Placements, unloads and reconciles holding or waiting for the lock. */
  #busy = 0;
  #since: number;
  #lock: Promise<unknown> = Promise.resolve();
  #listeners = new Set<() => void>();
  #swapListeners = new Set<(timings: SwapTimings) => void>();
  /** Ends a health poll still running at shutdown (it may wait for minutes otherwise). */
  #closing = new AbortController();

  constructor(docker: Docker, models: readonly ModelConfig[], options: ModelManagerOptions) {
    this.#docker = docker;
    this.#models = new Map(models.map((m) => [m.id, m]));
    this.#byContainer = new Map(models.map((m) => [m.containerName, m]));
    this.#capacity = capacityOf({ memoryBudgetGb: options.memoryBudgetGb, models });
    this.#clock = options.clock;
    this.#log = options.log;
    this.#stopTimeoutS = options.stopTimeoutS;
    this.#logTailLines = options.logTailLines ?? 20;
    this.#loadProgressMs = options.loadProgressMs ?? 10_000;
    this.#activity = options.activity;
    this.#kv = options.slots ?? null;
    this.#since = options.clock.now();
  }

  snapshot(): ModelSnapshot {
    const residents = [...this.#residents].map(([model, slot]): ResidentSnapshot => ({
      model,
      phase: slot.phase as ResidentSnapshot["phase"],
      since: slot.since,
      inflight: slot.leases,
      lastUsed: slot.lastUsed,
      memoryGb: this.#models.get(model)?.memoryGb ?? null,
    })).sort((a, b) => b.since - a.since);
    const ready = residents.find((r) => r.phase === "ready");
    const phases = new Set(residents.map((r) => r.phase));
    const phase: SetPhase = this.#reconciling
      ? "reconciling"
      : phases.has("stopping") || phases.has("draining")
      ? "stopping"
      : phases.has("starting")
      ? "starting"
      : ready !== undefined
      ? "ready"
      : "idle";
    return {
      loaded: ready?.model ?? null,
      phase,
      target: this.#target,
      since: this.#since,
      inflight: residents.reduce((n, r) => n + r.inflight, 0),
      busy: this.#busy > 0,
      residents,
    };
  }

  stateOf(modelId: string): ModelState {
    const phase = this.#phaseOf(modelId);
    if (phase === "ready" || phase === "draining") return "loaded";
    return phase === "starting" ? "loading" : "stopped";
  }

  /** Whether `model` keeps its slots' KV cache across stops: on, off, or unsupported. */
  kvStatus(model: ModelConfig): KvStatus {
    return this.#kv?.status(model) ?? "off";
  }

  /**
   * The residents a placement of `modelId` would stop now (lib/placement.ts): the fewest,
   * least recently used first; empty when it fits beside them.
   */
  victimsFor(modelId: string): string[] {
    return victimsFor(modelId, this.#occupants(), this.#capacity);
  }

  /** Gives up any swap or reconcile in progress; for shutdown. */
  close(): void {
    this.#closing.abort(new Error("The proxy is shutting down"));
  }

  /** Subscribes to every change of residency (phases, placements); lease counts are not told. */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Subscribes to every successful swap; returns the unsubscribe function. */
  onSwap(listener: (timings: SwapTimings) => void): () => void {
    this.#swapListeners.add(listener);
    return () => this.#swapListeners.delete(listener);
  }

  /**
   * Claims a ready model for one request, or returns null when `model` is not ready.
   * A placement that stops it waits until every lease is released.
   */
  lease(model: string): Lease | null {
    const slot = this.#residents.get(model);
    if (slot?.phase !== "ready") return null;
    slot.leases++;
    slot.lastUsed = this.#clock.now();
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        slot.leases--;
        slot.lastUsed = this.#clock.now();
        if (slot.leases === 0) { for (const wake of slot.drainWaiters.splice(0)) wake(); }
        // No change event: the holder pumps its own queue after releasing, and listeners
        // (the batch runner claims from the store on each) follow residency, not requests.
      },
    };
  }

  /**
   * Starts `modelId`, first stopping the residents that must make room (once their requests
   * finished). Returns null when it already was ready.
   * @throws {SwapFailedError} with a client-facing message (log tail included).
   */
  place(modelId: string, cause: string | null = null): Promise<SwapTimings | null> {
    const model = this.#models.get(modelId);
    if (!model) return Promise.reject(new Error(`Unknown model '${modelId}'`));
    return this.#exclusive(() => this.#place(model, cause));
  }

  /**
   * Stops models once their requests finished (admin unload, idle TTL): `modelId`, or every
   * resident. Returns the models that were unloaded.
   */
  unload(cause = "unload", modelId: string | null = null): Promise<string[]> {
    return this.#exclusive(async () => {
      const ids = modelId === null ? [...this.#residents.keys()] : [modelId];
      const ready = ids.filter((id) => this.#phaseOf(id) === "ready");
      await Promise.all(ready.map((id) => this.#unload(id, cause)));
      return ready;
    });
  }

  /**
   * Moves to a new list of models and budget (config reload). Known at once to every caller;
   * residents that were removed or moved to another container are unloaded once their
   * requests finished, then the least recently used until the set fits a smaller budget
   * (the returned promise settles then). Nothing else is touched.
   */
  reconfigure(models: readonly ModelConfig[], memoryBudgetGb: number | null): Promise<void> {
    const previous = this.#models;
    this.#models = new Map(models.map((m) => [m.id, m]));
    this.#byContainer = new Map(models.map((m) => [m.containerName, m]));
    this.#capacity = capacityOf({ memoryBudgetGb, models });
    // The old containers must stay reachable until they are stopped.
    this.#docker.allow([...previous.values(), ...models].map((m) => m.containerName));
    return this.#exclusive(async () => {
      try {
        const moved = [...this.#residents.keys()].filter((id) =>
          this.#models.get(id)?.containerName !== previous.get(id)?.containerName
        );
        await Promise.all(moved.map((id) => this.#unload(id, "config", previous.get(id))));
        while (!fitsTogether([...this.#residents.keys()], this.#capacity)) {
          const lru = this.#occupants().sort((a, b) => a.lastUsed - b.lastUsed)[0];
          await this.#unload(lru.model, "budget");
        }
      } finally {
        this.#docker.allow(models.map((m) => m.containerName));
      }
    });
  }

  /**
   * Stops one resident once its requests finished. Runs under the lock. `config` names its
   * container when a reload already removed or changed it.
   */
  async #unload(id: string, cause: string, config = this.#models.get(id)): Promise<void> {
    const slot = this.#residents.get(id);
    if (slot === undefined || config === undefined) return;
    if (slot.phase === "ready") await this.#drain(id);
    if (this.#phaseOf(id) !== "draining") return; // its container died meanwhile
    const began = performance.now();
    const kvSaved = cause === "config" ? null : await this.#saveSlots(config);
    this.#move(id, "stopping");
    let error: string | null = null;
    try {
      await this.#docker.stop(config.containerName, this.#stopTimeoutS);
      this.#log.info("unload", { model: id, cause });
    } catch (err) {
      error = messageOf(err);
      throw err;
    } finally {
      this.#move(id, "stopped");
      this.#record({ from: id, to: null, began, cause, error, kvSaved });
    }
  }

  /** Saves a drained model's slots (kv_cache); never throws. */
  #saveSlots(model: ModelConfig): Promise<KvOutcome | null> {
    return this.#withSlots(model, (kv, build) => kv.save(model, build));
  }

  /** Restores a started model's slots before it takes requests (kv_cache); never throws. */
  #restoreSlots(model: ModelConfig): Promise<KvOutcome | null> {
    return this.#withSlots(model, (kv, build) => kv.restore(model, build));
  }

  /** Runs a KV slot action for a model with `kv_cache`, given its build; null on any failure. */
  async #withSlots(
    model: ModelConfig,
    action: (kv: SlotKeeper, build: string) => Promise<KvOutcome | null>,
  ): Promise<KvOutcome | null> {
    // Off or unsupported (it answered 501): no inspect, no hash, nothing to do.
    const kv = this.#kv;
    if (kv === null || kv.status(model) !== "on") return null;
    return await this.#buildOf(model).then((build) => action(kv, build)).catch(() => null);
  }

  /** Which build of a model runs: its id, its container's image and spec. */
  async #buildOf(model: ModelConfig): Promise<string> {
    const state = await this.#docker.inspect(model.containerName);
    const text = `${model.id}|${state.image}|${state.labels[SPEC_LABEL] ?? ""}`;
    return await shortHash(new TextEncoder().encode(text));
  }

  /** Takes `id` out of service and waits for its requests in flight (never cut a stream). */
  async #drain(id: string): Promise<void> {
    this.#move(id, "draining");
    const slot = this.#residents.get(id)!;
    if (slot.leases > 0) await new Promise<void>((resolve) => slot.drainWaiters.push(resolve));
  }

  /**
   * Start-up: adopt reality. Running configured containers are kept, most recently started
   * first, as long as they fit together; the others are stopped. Kept ones become ready once
   * healthy.
   */
  reconcile(): Promise<void> {
    return this.#exclusive(async () => {
      this.#reconciling = true;
      this.#emit();
      try {
        await this.#reconcile();
      } catch (err) {
        this.#log.warn("reconcile_failed", {
          error: messageOf(err),
        });
        for (const id of [...this.#residents.keys()]) this.#forget(id);
      } finally {
        this.#reconciling = false;
        this.#emit();
      }
    });
  }

  /**
   * A forward to `modelId` failed before any byte came back. If its container is no longer
   * running, forget that it is loaded so the next request starts it again.
   */
  async reportUnreachable(modelId: string): Promise<void> {
    const model = this.#models.get(modelId);
    if (!model || this.#phaseOf(modelId) !== "ready") return;
    // A process that just died is still "running" to Docker for a moment: wait for its state
    // to settle (or for the backend to answer again) before deciding.
    const deadline = Date.now() + 2000;
    while (this.#phaseOf(modelId) === "ready" && Date.now() < deadline) {
      const running = await this.#docker.inspect(model.containerName).then(
        (state) => state.running,
        () => false,
      );
      if (!running) {
        this.#log.warn("backend_gone", { model: modelId, container: model.containerName });
        return this.#forget(modelId);
      }
      const answers = await fetch(model.healthUrl, { signal: AbortSignal.timeout(200) })
        .then(async (res) => isReadyAnswer(res.status, await res.text()), () => false);
      if (answers) return;
      await delay(50);
    }
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    this.#busy++;
    this.#emit();
    const run = this.#lock.then(fn, fn).finally(() => {
      this.#busy--;
      this.#emit();
    });
    this.#lock = run.catch(() => {});
    return run;
  }

  #phaseOf(id: string): ModelPhase {
    return this.#residents.get(id)?.phase ?? "stopped";
  }

  /** Residents, for placement: a model that is not stopped occupies its memory and port. */
  #occupants(): Occupant[] {
    return [...this.#residents].map(([model, slot]) => ({ model, lastUsed: slot.lastUsed }));
  }

  /** The one writer of phases: moves `id` along the transition table, or throws. */
  #move(id: string, to: ModelPhase): void {
    const from = this.#phaseOf(id);
    if (!TRANSITIONS[from].includes(to)) {
      throw new Error(`model ${id}: no transition from ${from} to ${to}`);
    }
    const now = this.#clock.now();
    if (to === "stopped") {
      const slot = this.#residents.get(id)!;
      this.#residents.delete(id);
      // Nobody waits for requests of a container that is gone.
      for (const wake of slot.drainWaiters.splice(0)) wake();
    } else {
      const slot = this.#residents.get(id);
      if (slot === undefined) {
        this.#residents.set(id, {
          phase: to,
          since: now,
          leases: 0,
          lastUsed: now,
          drainWaiters: [],
        });
      } else {
        slot.phase = to;
        slot.since = now;
        if (to === "ready") slot.lastUsed = now;
      }
    }
    this.#since = now;
    this.#emit();
  }

  /** A resident whose container is gone (died, or Docker lost it): stopped, from any phase. */
  #forget(id: string): void {
    if (this.#phaseOf(id) !== "stopped") this.#move(id, "stopped");
  }

  /** Puts a finished swap or unload on the dashboard's timeline. */
  #record(swap: {
    from: string | null;
    to: string | null;
    began: number;
    cause: string | null;
    error?: string | null;
    kvSaved?: KvOutcome | null;
    kvRestored?: KvOutcome | null;
  }): void {
    this.#activity.swap({
      from: swap.from,
      to: swap.to,
      at: this.#clock.now(),
      ms: Math.round(performance.now() - swap.began),
      ok: (swap.error ?? null) === null,
      cause: swap.cause,
      error: swap.error ?? null,
      kvSaved: swap.kvSaved ?? null,
      kvRestored: swap.kvRestored ?? null,
    });
  }

  #emit(): void {
    for (const listener of this.#listeners) listener();
  }

  async #place(model: ModelConfig, cause: string | null): Promise<SwapTimings | null> {
    if (this.#phaseOf(model.id) === "ready") return null;
    const began = performance.now();
    try {
      // A missing target must not cost the user the models that run now.
      await ensureContainer(this.#docker, model, this.#log);
    } catch (err) {
      throw await this.#swapFailed(model, null, err, began, cause);
    }
    const victims = this.victimsFor(model.id);
    const from = victims.length === 0 ? null : victims.join(",");
    let kvSaved: KvOutcome | null = null;
    this.#target = model.id;
    try {
      // Never cut a stream: the victims' requests finish first.
      await Promise.all(victims.map((id) => this.#drain(id)));
      const saves = await Promise.all(
        victims.map((id) => this.#saveSlots(this.#models.get(id)!)),
      );
      kvSaved = sumOutcomes(saves);
      const stopping = victims.filter((id) => this.#phaseOf(id) === "draining");
      for (const id of stopping) this.#move(id, "stopping");
      // Configured containers running outside the resident set (started by hand) go too.
      const strays = (await this.#runningContainers()).filter((name) => {
        const owner = this.#byContainer.get(name);
        return owner !== undefined && owner.id !== model.id && !this.#residents.has(owner.id);
      });
      const names = [...stopping.map((id) => this.#models.get(id)!.containerName), ...strays];
      try {
        await Promise.all(names.map((name) => this.#docker.stop(name, this.#stopTimeoutS)));
      } finally {
        for (const id of stopping) this.#move(id, "stopped");
      }
      for (const id of stopping) this.#log.info("evict", { model: id, for: model.id });
      const stopped = performance.now();
      this.#move(model.id, "starting");
      const started = await this.#start(model);
      const healthy = performance.now();
      // Before any request reaches it: a warm return gets its conversations' cache back.
      const kvRestored = await this.#restoreSlots(model);
      const timings: SwapTimings = {
        from,
        evicted: victims,
        to: model.id,
        stopMs: Math.round(stopped - began),
        startMs: Math.round(started - stopped),
        healthyMs: Math.round(healthy - started),
      };
      this.#log.info("swap", {
        from: from ?? "none",
        to: model.id,
        stop_ms: timings.stopMs,
        start_ms: timings.startMs,
        healthy_ms: timings.healthyMs,
        kv_saved_tokens: kvSaved?.tokens,
        kv_save_ms: kvSaved?.ms,
        kv_restored_tokens: kvRestored?.tokens,
        kv_restore_ms: kvRestored?.ms,
        resident: [...this.#residents.keys()].join(","),
        cause: cause ?? undefined,
      });
      this.#record({ from, to: model.id, began, cause, kvSaved, kvRestored });
      // Before it is ready: the requests that waited for this swap are still waiting then.
      for (const listener of this.#swapListeners) listener(timings);
      this.#move(model.id, "ready");
      return timings;
    } catch (err) {
      if (this.#phaseOf(model.id) === "starting") this.#move(model.id, "stopping");
      try {
        throw await this.#swapFailed(model, from, err, began, cause);
      } finally {
        this.#forget(model.id);
      }
    } finally {
      this.#target = null;
      this.#emit();
    }
  }

  /**
   * Creates every missing container that a model's `container:` block describes, so that
   * `/health` and the first swap find them (start-up). Failures are logged; the swap that
   * needs the container reports them to its requests.
   */
  async createMissing(): Promise<void> {
    for (const model of this.#models.values()) {
      if (model.container === null) continue;
      await this.#exclusive(() => ensureContainer(this.#docker, model, this.#log)).catch((err) =>
        this.#log.warn("container_create_failed", {
          model: model.id,
          container: model.containerName,
          error: messageOf(err),
        })
      );
    }
  }

  async #swapFailed(
    model: ModelConfig,
    from: string | null,
    err: unknown,
    began: number,
    cause: string | null,
  ) {
    const failure = await this.#describe(model, err);
    this.#log.error("swap_failed", { from: from ?? "none", to: model.id, error: failure.message });
    this.#record({ from, to: model.id, began, cause, error: failure.message });
    return failure;
  }

  /**
   * Keeps the invariant when someone else moves a container: a configured container started
   * by hand while other models run (or start) is stopped again, and a resident whose
   * container stopped is forgotten, so the next request starts it again. Follows
   * Docker's events until `signal` aborts, reconnecting (and reconciling) after Docker
   * restarts.
   */
  async watch(signal: AbortSignal): Promise<void> {
    let delayMs = 250;
    while (!signal.aborted) {
      try {
        const events = this.#docker.events(signal);
        if (delayMs > 250) await this.reconcile(); // Docker came back: see what survived
        delayMs = 250;
        for await (const event of events) await this.#onEvent(event);
      } catch (err) {
        if (signal.aborted) return;
        this.#log.warn("docker_events_lost", {
          error: messageOf(err),
        });
      }
      await delay(delayMs, signal).catch(() => {});
      delayMs = Math.min(delayMs * 2, 5000);
    }
  }

  async #onEvent(event: ContainerEvent): Promise<void> {
    const model = this.#byContainer.get(event.name);
    if (!model) return;
    const phase = this.#phaseOf(model.id);
    if (event.action === "start" && phase === "stopped") {
      // Started by hand: it may not fit beside the residents, so it goes unless nothing runs.
      if (this.#residents.size === 0 && this.#busy === 0) return;
      this.#log.warn("foreign_start_stopped", {
        container: event.name,
        resident: [...this.#residents.keys()].join(","),
      });
      await this.#docker.stop(event.name, this.#stopTimeoutS).catch(() => {});
    } else if (event.action !== "start" && (phase === "ready" || phase === "draining")) {
      this.#log.warn("backend_gone", { model: model.id, container: event.name });
      this.#forget(model.id);
    }
  }

  async #runningContainers(): Promise<string[]> {
    return (await this.#docker.list()).filter((c) => c.running).map((c) => c.name);
  }

  async #waitHealthy(model: ModelConfig, deadline: number): Promise<void> {
    // A big model loads for minutes: say it is still loading, so the log does not look hung.
    const began = this.#clock.now();
    const progress = setInterval(() => {
      this.#log.info("loading", {
        model: model.id,
        elapsed_s: Math.round((this.#clock.now() - began) / 1000),
        timeout_s: model.startupTimeoutMs / 1000,
      });
    }, this.#loadProgressMs);
    const result = await pollUntilHealthy(model.healthUrl, {
      deadline,
      signal: this.#closing.signal,
      check: () => assertRunning(this.#docker, model),
    }).finally(() => clearInterval(progress));
    if (!result.ready) {
      throw new SwapFailedError(
        model.id,
        "model_load_failed",
        `Model '${model.id}' did not become healthy within startup_timeout ` +
          `(${
            model.startupTimeoutMs / 1000
          }s); last answer from ${model.healthUrl}: ${result.lastAnswer}`,
      );
    }
  }

  /**
   * Starts a model's container and waits until it is healthy; returns when the last start
   * began (performance.now()). A container killed from outside while it loads (SIGKILL or
   * SIGTERM, not the OOM killer) says nothing about the model: it is started again, within the
   * same `startup_timeout`. One that exits on its own fails the load at once.
   */
  async #start(model: ModelConfig): Promise<number> {
    const deadline = this.#clock.now() + model.startupTimeoutMs;
    for (;;) {
      await this.#docker.start(model.containerName);
      const started = performance.now();
      try {
        await this.#waitHealthy(model, deadline);
        return started;
      } catch (err) {
        const killed = err instanceof ContainerExitedError && err.killed;
        if (!killed || this.#clock.now() >= deadline) throw err;
        this.#log.warn("load_restarted", { model: model.id, reason: (err as Error).message });
      }
    }
  }

  #describe(model: ModelConfig, err: unknown): Promise<SwapFailedError> {
    return describeFailure(this.#docker, model, err, {
      logTailLines: this.#logTailLines,
      stopTimeoutS: this.#stopTimeoutS,
    });
  }

  async #reconcile(): Promise<void> {
    const running = (await this.#runningContainers()).filter((name) => this.#byContainer.has(name));
    // After Docker came back, residents whose containers did not survive are gone.
    for (const id of [...this.#residents.keys()]) {
      const name = this.#models.get(id)?.containerName;
      if (name !== undefined && !running.includes(name) && this.#phaseOf(id) === "ready") {
        this.#log.warn("backend_gone", { model: id, container: name });
        this.#forget(id);
      }
    }
    const states = await Promise.all(running.map((name) => this.#docker.inspect(name)));
    states.sort((a, b) => b.startedAt.localeCompare(a.startedAt));
    const kept: ModelConfig[] = [];
    const extra: string[] = [];
    for (const state of states) {
      const model = this.#byContainer.get(state.name)!;
      const together = [...this.#residents.keys(), ...kept.map((m) => m.id), model.id];
      if (!this.#residents.has(model.id) && fitsTogether(together, this.#capacity)) {
        kept.push(model);
      } else if (!this.#residents.has(model.id)) extra.push(state.name);
    }
    await Promise.all(extra.map((name) => this.#docker.stop(name, this.#stopTimeoutS)));
    if (extra.length > 0) {
      this.#log.warn("reconcile_stopped_extra", {
        kept: kept.map((m) => m.containerName).join(","),
        stopped: extra.join(","),
      });
    }
    await Promise.all(kept.map(async (model) => {
      this.#move(model.id, "starting");
      try {
        await this.#waitHealthy(model, this.#clock.now() + model.startupTimeoutMs);
        this.#move(model.id, "ready");
        this.#log.info("reconcile_adopted", { model: model.id, container: model.containerName });
      } catch (err) {
        if (this.#phaseOf(model.id) === "starting") this.#move(model.id, "stopping");
        const failure = await this.#describe(model, err);
        this.#log.warn("reconcile_unhealthy", { model: model.id, error: failure.message });
        this.#forget(model.id);
      }
    }));
  }
}

/** Saves of several models as one outcome, or null when none saved anything. */
function sumOutcomes(outcomes: readonly (KvOutcome | null)[]): KvOutcome | null {
  const saved = outcomes.filter((o): o is KvOutcome => o !== null);
  if (saved.length === 0) return null;
  return {
    slots: saved.reduce((n, o) => n + o.slots, 0),
    tokens: saved.reduce((n, o) => n + o.tokens, 0),
    bytes: saved.reduce((n, o) => n + o.bytes, 0),
    ms: Math.max(...saved.map((o) => o.ms)),
  };
}
