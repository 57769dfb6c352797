/**
 * @module
 * The swap manager: the sole owner of "which models run". Placements (start a model, first
 * stopping the fewest least-recently-used residents that make room, lib/placement.ts),
 * unloads, config moves and start-up reconciling all hold one lock, so no two of them decide
 * at once; requests on other residents go on meanwhile. Invariant: the declared memory of
 * running containers stays within `memory_budget` (without one: one model at a time) and no
 * two share a backend port. It never touches a container that config.yml does not name.
 *
 * Over 350 lines on purpose: the four holders of the lock stay side by side, so that a reader
 * sees every path that changes the set in one file. Phases and leases are kept by
 * lib/residents.ts, the container work by lib/model_containers.ts, and drift from outside by
 * lib/container_drift.ts.
 */
import { messageOf } from "./errors.ts";
import type { Clock } from "./clock.ts";
import type { ModelConfig } from "./config_types.ts";
import type { Docker } from "./docker.ts";
import { ensureContainer } from "./provisioning.ts";
import type { SwapFailedError } from "./swap_failures.ts";
import type { Activity } from "./activity.ts";
import type { Logger } from "./log.ts";
import { type Capacity, capacityOf, fitsTogether, victimsFor } from "./placement.ts";
import type { KvOutcome, KvStatus } from "./kv_slots.ts";
import { ModelContainers, type ModelContainersOptions } from "./model_containers.ts";
import { type Lease, ResidentSet, type ResidentSnapshot } from "./residents.ts";
import { ContainerDrift } from "./container_drift.ts";

/** What the resident set is doing as a whole (the seed's single-model view of it). */
export type SetPhase = "idle" | "reconciling" | "stopping" | "starting" | "ready";

/** What one model's container is doing, as `/v1/models` and the dashboard tell it. */
export type ModelState = "loaded" | "loading" | "stopped";

/** A resident as the scheduler, routes and the dashboard see it. */
export interface ResidentView extends ResidentSnapshot {
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
  residents: ResidentView[];
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

export interface SwapManagerOptions extends ModelContainersOptions {
  /** Where swaps and unloads are recorded for the dashboard. */
  activity: Activity;
  /** GB the running models may declare together; null: one model at a time. */
  memoryBudgetGb: number | null;
}

export class SwapManager {
  readonly #docker: Docker;
  // Set by #setModels(), from the constructor and on every reload.
  #models!: Map<string, ModelConfig>;
  /**
   * Containers of residents a reload removed or moved, until their unload ran: the Docker face
   * must still reach them to stop them, whatever later reloads say.
   */
  readonly #leaving = new Set<string>();
  #byContainer!: Map<string, ModelConfig>;
  #capacity!: Capacity;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #activity: Activity;
  readonly #containers: ModelContainers;
  readonly #residents: ResidentSet;
  readonly #drift: ContainerDrift;
  /** The model a placement under way starts. */
  #target: string | null = null;
  #reconciling = false;
  /** Placements, unloads and reconciles holding or waiting for the lock. */
  #busy = 0;
  #lock: Promise<unknown> = Promise.resolve();
  #listeners = new Set<() => void>();
  #swapListeners = new Set<(timings: SwapTimings) => void>();
  #failureListeners = new Set<(model: string, failure: SwapFailedError) => void>();

  constructor(docker: Docker, models: readonly ModelConfig[], options: SwapManagerOptions) {
    this.#docker = docker;
    this.#setModels(models, options.memoryBudgetGb);
    this.#clock = options.clock;
    this.#log = options.log;
    this.#activity = options.activity;
    this.#containers = new ModelContainers(docker, options);
    this.#residents = new ResidentSet(options.clock, () => this.#emit());
    this.#drift = new ContainerDrift(docker, options.log, {
      residents: this.#residents,
      ownerOf: (name) => this.#byContainer.get(name),
      modelOf: (id) => this.#models.get(id),
      busy: () => this.busy,
      reconcile: () => this.reconcile(),
      stop: (name) => this.#containers.stop(name),
    });
  }

  snapshot(): ModelSnapshot {
    // The dispatcher takes one per decision (four a request): one pass, no Set or closures.
    const residents: ResidentView[] = [];
    for (const r of this.#residents.list()) {
      residents.push({ ...r, memoryGb: this.#models.get(r.model)?.memoryGb ?? null });
    }
    if (residents.length > 1) residents.sort((a, b) => b.since - a.since);
    let ready: ResidentView | undefined;
    let stopping = false;
    let starting = false;
    let inflight = 0;
    for (const r of residents) {
      if (r.phase === "stopping" || r.phase === "draining") stopping = true;
      else if (r.phase === "starting") starting = true;
      else if (r.phase === "ready") ready ??= r;
      inflight += r.inflight;
    }
    const phase: SetPhase = this.#reconciling
      ? "reconciling"
      : stopping
      ? "stopping"
      : starting
      ? "starting"
      : ready !== undefined
      ? "ready"
      : "idle";
    return {
      loaded: ready?.model ?? null,
      phase,
      target: this.#target,
      since: this.#residents.since,
      inflight,
      busy: this.busy,
      residents,
    };
  }

  /** A placement, unload or reconcile holds or waits for the lock. */
  get busy(): boolean {
    return this.#busy > 0;
  }

  stateOf(modelId: string): ModelState {
    const phase = this.#residents.phaseOf(modelId);
    if (phase === "ready" || phase === "draining") return "loaded";
    return phase === "starting" ? "loading" : "stopped";
  }

  /** Whether `model` keeps its slots' KV cache across stops: on, off, or unsupported. */
  kvStatus(model: ModelConfig): KvStatus {
    return this.#containers.kvStatus(model);
  }

  /**
   * The residents a placement of `modelId` would stop now (lib/placement.ts): the fewest,
   * least recently used first; empty when it fits beside them.
   */
  victimsFor(modelId: string): string[] {
    return victimsFor(modelId, this.#residents.occupants(), this.#capacity);
  }

  /** Gives up any swap or reconcile in progress; for shutdown. */
  close(): void {
    this.#containers.close();
  }

  /** Subscribes to every change of residency (phases, placements); lease counts are not told. */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Subscribes to every successful swap, told under the lock before the model takes requests;
   * returns the unsubscribe function.
   */
  onSwap(listener: (timings: SwapTimings) => void): () => void {
    this.#swapListeners.add(listener);
    return () => this.#swapListeners.delete(listener);
  }

  /**
   * Subscribes to every failed placement, told under the lock, so that nobody decides to
   * place the broken model again before the requests waiting for it have their answer.
   */
  onSwapFailed(listener: (model: string, failure: SwapFailedError) => void): () => void {
    this.#failureListeners.add(listener);
    return () => this.#failureListeners.delete(listener);
  }

  /** Follows Docker's events for changes made from outside (lib/container_drift.ts). */
  watch(signal: AbortSignal): Promise<void> {
    return this.#drift.watch(signal);
  }

  /**
   * A forward to `modelId` failed before any byte came back: forgets it when its container is
   * gone, so the next request starts it again.
   */
  reportUnreachable(modelId: string): Promise<void> {
    return this.#drift.reportUnreachable(modelId);
  }

  /**
   * Claims a ready model for one request, or returns null when `model` is not ready or a
   * placement is about to stop it. A placement that stops it waits until every lease is released.
   */
  lease(model: string): Lease | null {
    return this.#residents.lease(model);
  }

  /**
   * Starts `modelId`, first stopping the residents that must make room (once their requests
   * finished). Returns null when it already was ready. The residents it will stop take no new
   * request from the moment it holds the lock, which is this call when nothing else holds it.
   * @throws {SwapFailedError} with a client-facing message (log tail included).
   */
  place(modelId: string, cause: string | null = null): Promise<SwapTimings | null> {
    const model = this.#models.get(modelId);
    if (!model) return Promise.reject(new Error(`Unknown model '${modelId}'`));
    // When nothing holds the lock, this placement starts at once: its victims must take no
    // new request from now on. It marks its own victims again when it runs (a mark each).
    const leaving = this.busy ? [] : this.victimsFor(modelId);
    // Busy from here on, before anyone hears of the marks.
    const placing = this.#exclusive(() =>
      this.#place(model, cause).finally(() => this.#residents.unmarkEvicting(leaving))
    );
    this.#residents.markEvicting(leaving);
    return placing;
  }

  /**
   * Stops models once their requests finished (admin unload, idle TTL): `modelId`, or every
   * resident. Returns the models that were unloaded. `still` is asked of each once the swap
   * lock is held, which may be after a whole load: a model it says no to stays.
   */
  unload(
    cause = "unload",
    modelId: string | null = null,
    still: (model: string) => boolean = () => true,
  ): Promise<string[]> {
    return this.#exclusive(async () => {
      const ids = modelId === null ? this.#residents.ids() : [modelId];
      const ready = ids.filter((id) => this.#residents.phaseOf(id) === "ready" && still(id));
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
    this.#setModels(models, memoryBudgetGb);
    const leaving = new Set<string>();
    // The model being placed too: it is a resident only once its load began.
    const placing = this.#target === null ? [] : [this.#target];
    for (const id of new Set([...this.#residents.ids(), ...placing])) {
      const before = previous.get(id)?.containerName;
      if (before !== undefined && this.#models.get(id)?.containerName !== before) {
        leaving.add(before);
        this.#leaving.add(before);
      }
    }
    // The old containers stay reachable until they are stopped: a load under way when this
    // reload came must still be checked and stopped.
    this.#allowReachable(previous.values());
    return this.#exclusive(async () => {
      try {
        const moved = this.#residents.ids().filter((id) =>
          this.#models.get(id)?.containerName !== previous.get(id)?.containerName
        );
        await Promise.all(moved.map((id) => this.#unload(id, "config", previous.get(id))));
        while (!fitsTogether(this.#residents.ids(), this.#capacity)) {
          const lru = this.#residents.occupants().sort((a, b) => a.lastUsed - b.lastUsed)[0];
          await this.#unload(lru.model, "budget");
        }
      } finally {
        for (const name of leaving) this.#leaving.delete(name);
        // The models in force now: a later reload may have changed them since this one began.
        this.#allowReachable([]);
      }
    });
  }

  /** Lets the Docker face reach the models in force, those still leaving, and `also`. */
  #allowReachable(also: Iterable<ModelConfig>): void {
    this.#docker.allow([
      ...[...this.#models.values(), ...also].map((m) => m.containerName),
      ...this.#leaving,
    ]);
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
        this.#log.warn("reconcile_failed", { error: messageOf(err) });
        for (const id of this.#residents.ids()) this.#residents.forget(id);
      } finally {
        this.#reconciling = false;
        this.#emit();
      }
    });
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

  #setModels(models: readonly ModelConfig[], memoryBudgetGb: number | null): void {
    this.#models = new Map(models.map((m) => [m.id, m]));
    this.#byContainer = new Map(models.map((m) => [m.containerName, m]));
    this.#capacity = capacityOf({ memoryBudgetGb, models });
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

  #emit(): void {
    for (const listener of this.#listeners) listener();
  }

  /**
   * Stops one resident once its requests finished. Runs under the lock. `config` names its
   * container when a reload already removed or changed it.
   */
  async #unload(id: string, cause: string, config = this.#models.get(id)): Promise<void> {
    const residents = this.#residents;
    if (!residents.has(id) || config === undefined) return;
    if (residents.phaseOf(id) === "ready") await residents.drain(id);
    if (residents.phaseOf(id) !== "draining") return; // its container died meanwhile
    const began = performance.now();
    const kvSaved = cause === "config" ? null : await this.#containers.saveSlots([config]);
    residents.move(id, "stopping");
    let error: string | null = null;
    try {
      await this.#containers.stop(config.containerName);
      this.#log.info("unload", { model: id, cause });
    } catch (err) {
      error = messageOf(err);
      throw err;
    } finally {
      residents.move(id, "stopped");
      this.#record({ from: id, to: null, began, cause, error, kvSaved });
    }
  }

  async #place(model: ModelConfig, cause: string | null): Promise<SwapTimings | null> {
    const residents = this.#residents;
    if (residents.phaseOf(model.id) === "ready") return null;
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
    residents.markEvicting(victims);
    try {
      // Never cut a stream: the victims' requests finish first.
      await Promise.all(victims.map((id) => residents.drain(id)));
      kvSaved = await this.#containers.saveSlots(victims.map((id) => this.#models.get(id)!));
      const stopping = victims.filter((id) => residents.phaseOf(id) === "draining");
      for (const id of stopping) residents.move(id, "stopping");
      // Configured containers running outside the resident set (started by hand) go too.
      const strays = (await this.#runningContainers()).filter((name) => {
        const owner = this.#byContainer.get(name);
        return owner !== undefined && owner.id !== model.id && !residents.has(owner.id);
      });
      const names = [...stopping.map((id) => this.#models.get(id)!.containerName), ...strays];
      try {
        await Promise.all(names.map((name) => this.#containers.stop(name)));
      } finally {
        for (const id of stopping) residents.move(id, "stopped");
      }
      for (const id of stopping) this.#log.info("evict", { model: id, for: model.id });
      const stopped = performance.now();
      residents.move(model.id, "starting");
      const started = await this.#containers.start(model);
      const healthy = performance.now();
      // Before any request reaches it: a warm return gets its conversations' cache back.
      const kvRestored = await this.#containers.restoreSlots(model);
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
        resident: residents.ids().join(","),
        cause: cause ?? undefined,
      });
      this.#record({ from, to: model.id, began, cause, kvSaved, kvRestored });
      // Before it is ready: the requests that waited for this swap are still waiting then.
      tellAll(this.#swapListeners, (listener) => listener(timings), this.#log);
      residents.move(model.id, "ready");
      return timings;
    } catch (err) {
      if (residents.phaseOf(model.id) === "starting") residents.move(model.id, "stopping");
      try {
        throw await this.#swapFailed(model, from, err, began, cause);
      } finally {
        residents.forget(model.id);
      }
    } finally {
      residents.unmarkEvicting(victims);
      this.#target = null;
      this.#emit();
    }
  }

  /** Words a failed placement, logs and records it, and tells the failure listeners. */
  async #swapFailed(
    model: ModelConfig,
    from: string | null,
    err: unknown,
    began: number,
    cause: string | null,
  ): Promise<SwapFailedError> {
    const failure = await this.#containers.describe(model, err);
    this.#log.error("swap_failed", { from: from ?? "none", to: model.id, error: failure.message });
    this.#record({ from, to: model.id, began, cause, error: failure.message });
    tellAll(this.#failureListeners, (listener) => listener(model.id, failure), this.#log);
    return failure;
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

  async #runningContainers(): Promise<string[]> {
    return (await this.#docker.list()).filter((c) => c.running).map((c) => c.name);
  }

  async #reconcile(): Promise<void> {
    const residents = this.#residents;
    const running = (await this.#runningContainers()).filter((name) => this.#byContainer.has(name));
    // After Docker came back, residents whose containers did not survive are gone.
    for (const id of residents.ids()) {
      const name = this.#models.get(id)?.containerName;
      if (name !== undefined && !running.includes(name) && residents.phaseOf(id) === "ready") {
        this.#log.warn("backend_gone", { model: id, container: name });
        residents.forget(id);
      }
    }
    const states = await Promise.all(running.map((name) => this.#docker.inspect(name)));
    states.sort((a, b) => b.startedAt.localeCompare(a.startedAt));
    const kept: ModelConfig[] = [];
    const extra: string[] = [];
    for (const state of states) {
      const model = this.#byContainer.get(state.name)!;
      if (residents.has(model.id)) continue;
      const together = [...residents.ids(), ...kept.map((m) => m.id), model.id];
      if (fitsTogether(together, this.#capacity)) kept.push(model);
      else extra.push(state.name);
    }
    await Promise.all(extra.map((name) => this.#containers.stop(name)));
    if (extra.length > 0) {
      this.#log.warn("reconcile_stopped_extra", {
        kept: kept.map((m) => m.containerName).join(","),
        stopped: extra.join(","),
      });
    }
    await Promise.all(kept.map(async (model) => {
      residents.move(model.id, "starting");
      try {
        await this.#containers.waitHealthy(model, this.#clock.now() + model.startupTimeoutMs);
        residents.move(model.id, "ready");
        this.#log.info("reconcile_adopted", { model: model.id, container: model.containerName });
      } catch (err) {
        if (residents.phaseOf(model.id) === "starting") residents.move(model.id, "stopping");
        const failure = await this.#containers.describe(model, err);
        this.#log.warn("reconcile_unhealthy", { model: model.id, error: failure.message });
        residents.forget(model.id);
      }
    }));
  }
}

/** Calls every listener; one that throws is logged and does not keep the others from hearing. */
function tellAll<L>(listeners: Iterable<L>, call: (listener: L) => void, log: Logger): void {
  for (const listener of listeners) {
    try {
      call(listener);
    } catch (err) {
      log.error("listener_failed", { error: messageOf(err) });
    }
  }
}
