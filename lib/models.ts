/**
 * @module
 * ModelManager: the sole owner of "which model is loaded". It keeps the single-GPU
 * invariant: swaps are serialized by one lock, wait for in-flight requests on the old model,
 * stop every other configured container, start the target and poll it until healthy.
 * It never touches a container that config.yml does not name.
 */
import type { Clock } from "./clock.ts";
import type { ModelConfig } from "./config.ts";
import {
  type ContainerEvent,
  ContainerNotFoundError,
  type ContainerState,
  type Docker,
  DockerApiError,
  DockerUnavailableError,
} from "./docker.ts";
import { createRequest, MANAGED_LABEL, SPEC_LABEL, specDigest } from "./container_spec.ts";
import { delay, isReadyAnswer, pollUntilHealthy } from "./health.ts";
import type { Activity } from "./activity.ts";
import type { Logger } from "./log.ts";

export type ModelPhase = "idle" | "reconciling" | "stopping" | "starting" | "ready";

/** What one model's container is doing, as `/v1/models` and the dashboard tell it. */
export type ModelState = "loaded" | "loading" | "stopped";

export interface ModelSnapshot {
  /** The model whose container is up and healthy, or null. */
  loaded: string | null;
  phase: ModelPhase;
  /** The model being started during `starting`/`stopping`. */
  target: string | null;
  /** When the current phase began (clock ms). */
  since: number;
  inflight: number;
}

export type SwapFailureCode = "container_not_found" | "docker_unavailable" | "model_load_failed";

/** A swap that did not end with a healthy model; the message is meant for the client. */
export class SwapFailedError extends Error {
  constructor(readonly model: string, readonly code: SwapFailureCode, message: string) {
    super(message);
    this.name = "SwapFailedError";
  }
}

export interface SwapTimings {
  from: string | null;
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
}

/** The container died while we waited for it to become healthy. */
class ContainerExitedError extends Error {}

export class ModelManager {
  readonly #docker: Docker;
  #models: Map<string, ModelConfig>;
  #byContainer: Map<string, ModelConfig>;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #stopTimeoutS: number;
  readonly #logTailLines: number;
  readonly #loadProgressMs: number;
  readonly #activity: Activity;
  #loaded: string | null = null;
  #phase: ModelPhase = "idle";
  #target: string | null = null;
  #since: number;
  #leases = 0;
  #drainWaiters: (() => void)[] = [];
  #lock: Promise<unknown> = Promise.resolve();
  #listeners = new Set<() => void>();
  #swapListeners = new Set<(timings: SwapTimings) => void>();
  /** Ends a health poll still running at shutdown (it may wait for minutes otherwise). */
  #closing = new AbortController();

  constructor(docker: Docker, models: readonly ModelConfig[], options: ModelManagerOptions) {
    this.#docker = docker;
    this.#models = new Map(models.map((m) => [m.id, m]));
    this.#byContainer = new Map(models.map((m) => [m.containerName, m]));
    this.#clock = options.clock;
    this.#log = options.log;
    this.#stopTimeoutS = options.stopTimeoutS;
    this.#logTailLines = options.logTailLines ?? 20;
    this.#loadProgressMs = options.loadProgressMs ?? 10_000;
    this.#activity = options.activity;
    this.#since = options.clock.now();
  }

  snapshot(): ModelSnapshot {
    return {
      loaded: this.#loaded,
      phase: this.#phase,
      target: this.#target,
      since: this.#since,
      inflight: this.#leases,
    };
  }

  stateOf(modelId: string): ModelState {
    if (this.#phase === "ready" && this.#loaded === modelId) return "loaded";
    return this.#target === modelId ? "loading" : "stopped";
  }

  /** Gives up any swap or reconcile in progress; for shutdown. */
  close(): void {
    this.#closing.abort(new Error("The proxy is shutting down"));
  }

  /** Subscribes to every change of the snapshot; returns the unsubscribe function. */
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
   * Claims the loaded model for one request, or returns null when `model` is not the loaded
   * and healthy one. Swaps wait until every lease is released.
   */
  lease(model: string): Lease | null {
    if (this.#loaded !== model || this.#phase !== "ready") return null;
    this.#leases++;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#leases--;
        if (this.#leases === 0) {
          for (const wake of this.#drainWaiters.splice(0)) wake();
        }
        this.#emit();
      },
    };
  }

  /**
   * Makes `modelId` the loaded model. Returns null when it already was.
   * @throws {SwapFailedError} with a client-facing message (log tail included).
   */
  swapTo(modelId: string, cause: string | null = null): Promise<SwapTimings | null> {
    const model = this.#models.get(modelId);
    if (!model) return Promise.reject(new Error(`Unknown model '${modelId}'`));
    return this.#exclusive(() => this.#swap(model, cause));
  }

  /**
   * Stops the loaded model's container once its requests finished (admin unload, idle TTL).
   * Returns the model that was unloaded, or null when none was loaded.
   */
  unload(cause = "unload"): Promise<string | null> {
    return this.#exclusive(() => {
      const model = this.#loaded === null ? undefined : this.#models.get(this.#loaded);
      return model === undefined ? Promise.resolve(null) : this.#unload(model, cause);
    });
  }

  /**
   * Moves to a new list of models (config reload). Known at once to every caller; the loaded
   * model, if it was removed or moved to another container, is unloaded once its requests
   * finished (the returned promise settles then). Nothing else is touched.
   */
  reconfigure(models: readonly ModelConfig[]): Promise<void> {
    const previous = this.#models;
    this.#models = new Map(models.map((m) => [m.id, m]));
    this.#byContainer = new Map(models.map((m) => [m.containerName, m]));
    // The old container must stay reachable until it is stopped.
    this.#docker.allow([...previous.values(), ...models].map((m) => m.containerName));
    return this.#exclusive(async () => {
      try {
        const loaded = this.#loaded === null ? undefined : previous.get(this.#loaded);
        const now = loaded && this.#models.get(loaded.id);
        if (loaded && now?.containerName !== loaded.containerName) {
          await this.#unload(loaded, "config");
        }
      } finally {
        this.#docker.allow(models.map((m) => m.containerName));
      }
    });
  }

  /** Stops `model`'s container once its requests finished. Runs under the lock. */
  async #unload(model: ModelConfig, cause: string): Promise<string> {
    await this.#drained();
    this.#set({ phase: "stopping", loaded: null, target: null });
    const began = performance.now();
    let error: string | null = null;
    try {
      await this.#docker.stop(model.containerName, this.#stopTimeoutS);
      this.#log.info("unload", { model: model.id, cause });
    } catch (err) {
      error = err instanceof Error ? err.message : String(err);
      throw err;
    } finally {
      this.#set({ phase: "idle" });
      this.#record({ from: model.id, to: null, began, cause, error });
    }
    return model.id;
  }

  /**
   * Start-up: adopt reality. If several configured containers run, keep the most recently
   * started one and stop the others; the kept one becomes current once healthy.
   */
  reconcile(): Promise<void> {
    return this.#exclusive(async () => {
      this.#set({ phase: "reconciling", target: null });
      try {
        await this.#reconcile();
      } catch (err) {
        this.#log.warn("reconcile_failed", {
          error: String(err instanceof Error ? err.message : err),
        });
        this.#set({ phase: "idle", loaded: null });
      }
    });
  }

  /**
   * A forward to `modelId` failed before any byte came back. If its container is no longer
   * running, forget that it is loaded so the next request starts it again.
   */
  async reportUnreachable(modelId: string): Promise<void> {
    const model = this.#models.get(modelId);
    if (!model || this.#loaded !== modelId) return;
    // A process that just died is still "running" to Docker for a moment: wait for its state
    // to settle (or for the backend to answer again) before deciding.
    const deadline = Date.now() + 2000;
    while (this.#loaded === modelId && Date.now() < deadline) {
      const running = await this.#docker.inspect(model.containerName).then(
        (state) => state.running,
        () => false,
      );
      if (!running) {
        this.#log.warn("backend_gone", { model: modelId, container: model.containerName });
        return this.#set({ phase: "idle", loaded: null });
      }
      const answers = await fetch(model.healthUrl, { signal: AbortSignal.timeout(200) })
        .then(async (res) => isReadyAnswer(res.status, await res.text()), () => false);
      if (answers) return;
      await delay(50);
    }
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(fn, fn);
    this.#lock = run.catch(() => {});
    return run;
  }

  #set(next: { phase: ModelPhase; loaded?: string | null; target?: string | null }): void {
    this.#phase = next.phase;
    if (next.loaded !== undefined) this.#loaded = next.loaded;
    if (next.target !== undefined) this.#target = next.target;
    this.#since = this.#clock.now();
    this.#emit();
  }

  /** Puts a finished swap or unload on the dashboard's timeline. */
  #record(swap: {
    from: string | null;
    to: string | null;
    began: number;
    cause: string | null;
    error?: string | null;
  }): void {
    this.#activity.swap({
      from: swap.from,
      to: swap.to,
      at: this.#clock.now(),
      ms: Math.round(performance.now() - swap.began),
      ok: (swap.error ?? null) === null,
      cause: swap.cause,
      error: swap.error ?? null,
    });
  }

  #emit(): void {
    for (const listener of this.#listeners) listener();
  }

  #drained(): Promise<void> {
    if (this.#leases === 0) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  async #swap(model: ModelConfig, cause: string | null): Promise<SwapTimings | null> {
    if (this.#loaded === model.id && this.#phase === "ready") return null;
    // Never cut a stream: requests on the old model finish first.
    await this.#drained();
    const from = this.#loaded;
    const began = performance.now();
    try {
      // A missing target must not cost the user the model that is loaded now.
      await this.#ensureContainer(model);
    } catch (err) {
      throw await this.#swapFailed(model, from, err, began, cause);
    }
    this.#set({ phase: "stopping", loaded: null, target: model.id });
    try {
      const running = await this.#runningContainers();
      await Promise.all(
        running.filter((name) => name !== model.containerName)
          .map((name) => this.#docker.stop(name, this.#stopTimeoutS)),
      );
      const stopped = performance.now();
      this.#set({ phase: "starting" });
      await this.#docker.start(model.containerName);
      const started = performance.now();
      await this.#waitHealthy(model, this.#clock.now() + model.startupTimeoutMs);
      const healthy = performance.now();
      this.#set({ phase: "ready", loaded: model.id, target: null });
      const timings = {
        from,
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
        cause: cause ?? undefined,
      });
      this.#record({ from, to: model.id, began, cause });
      for (const listener of this.#swapListeners) listener(timings);
      return timings;
    } catch (err) {
      const failure = await this.#swapFailed(model, from, err, began, cause);
      this.#set({ phase: "idle", loaded: null, target: null });
      throw failure;
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
      await this.#exclusive(() => this.#ensureContainer(model)).catch((err) =>
        this.#log.warn("container_create_failed", {
          model: model.id,
          container: model.containerName,
          error: err instanceof Error ? err.message : String(err),
        })
      );
    }
  }

  /**
   * Makes sure a model's container exists: created from its `container:` block when missing,
   * or anew when the block changed since the proxy created it (never while it runs). Without
   * a block, a missing container stays the operator's to create.
   * @throws {ContainerNotFoundError} when it is missing and config has no block for it.
   */
  async #ensureContainer(model: ModelConfig): Promise<void> {
    let state: ContainerState | null = null;
    try {
      state = await this.#docker.inspect(model.containerName);
    } catch (err) {
      if (!(err instanceof ContainerNotFoundError) || model.container === null) throw err;
    }
    if (model.container === null) return;
    const digest = await specDigest(model.container);
    if (state !== null) {
      const outdated = state.labels[MANAGED_LABEL] === "true" &&
        state.labels[SPEC_LABEL] !== digest;
      if (!outdated) return;
      if (state.running) {
        // Never cut a model off under its users; the next start gets the new container.
        this.#log.warn("container_outdated", {
          model: model.id,
          container: model.containerName,
          note: "its container block changed; it is created anew the next time it starts",
        });
        return;
      }
      await this.#docker.remove(model.containerName);
      this.#log.info("container_removed", {
        model: model.id,
        container: model.containerName,
        reason: "its container block changed",
      });
    }
    await this.#docker.create(
      model.containerName,
      createRequest(model.container, model.id, digest),
    );
    this.#log.info("container_created", {
      model: model.id,
      container: model.containerName,
      image: model.container.image,
    });
  }

  async #swapFailed(
    model: ModelConfig,
    from: string | null,
    err: unknown,
    began: number,
    cause: string | null,
  ) {
    const failure = await this.#describeFailure(model, err);
    this.#log.error("swap_failed", { from: from ?? "none", to: model.id, error: failure.message });
    this.#record({ from, to: model.id, began, cause, error: failure.message });
    return failure;
  }

  /**
   * Keeps the invariant when someone else moves a container: a configured container started
   * by hand while another model is loaded (or loading) is stopped again, and a loaded model
   * whose container stopped is forgotten, so the next request starts it again. Follows
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
          error: err instanceof Error ? err.message : String(err),
        });
      }
      await delay(delayMs, signal).catch(() => {});
      delayMs = Math.min(delayMs * 2, 5000);
    }
  }

  async #onEvent(event: ContainerEvent): Promise<void> {
    const model = this.#byContainer.get(event.name);
    if (!model) return;
    const busyWith = this.#phase === "ready" ? this.#loaded : this.#target;
    if (event.action === "start" && busyWith !== null && busyWith !== model.id) {
      this.#log.warn("foreign_start_stopped", { container: event.name, loaded: busyWith });
      await this.#docker.stop(event.name, this.#stopTimeoutS).catch(() => {});
    } else if (event.action !== "start" && this.#loaded === model.id && this.#phase === "ready") {
      this.#log.warn("backend_gone", { model: model.id, container: event.name });
      this.#set({ phase: "idle", loaded: null });
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
      check: () => this.#assertRunning(model),
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

  async #assertRunning(model: ModelConfig): Promise<void> {
    const state = await this.#docker.inspect(model.containerName);
    if (state.running) return;
    const reason = state.oomKilled ? ", killed by the OOM killer" : "";
    const detail = state.error ? ` (${state.error})` : "";
    throw new ContainerExitedError(
      `Model '${model.id}' failed to start: container ${model.containerName} is ${state.status} ` +
        `with exit code ${state.exitCode}${reason}${detail}`,
    );
  }

  /** Turns any swap error into the client's message, stopping a half-started container. */
  async #describeFailure(model: ModelConfig, err: unknown): Promise<SwapFailedError> {
    if (err instanceof ContainerNotFoundError) {
      return new SwapFailedError(
        model.id,
        "container_not_found",
        `${err.message} (model '${model.id}'). Create it first with docker create --name ${err.container} ..., or give the model a container: block in config.yml so the proxy creates it`,
      );
    }
    if (err instanceof DockerUnavailableError) {
      return new SwapFailedError(model.id, "docker_unavailable", err.message);
    }
    if (err instanceof DockerApiError && /no such image/i.test(err.message)) {
      return new SwapFailedError(
        model.id,
        "model_load_failed",
        `Model '${model.id}' cannot be created: Docker said: ${err.message}. ` +
          `The proxy does not pull images; run docker pull ${model.container?.image} first`,
      );
    }
    const base = err instanceof Error ? err.message : String(err);
    const message = err instanceof SwapFailedError || err instanceof ContainerExitedError
      ? base
      : `Model '${model.id}' failed to start: Docker said: ${base}`;
    const tail = await this.#docker.logTail(model.containerName, this.#logTailLines)
      .catch(() => "");
    await this.#docker.stop(model.containerName, this.#stopTimeoutS).catch(() => {});
    const logPart = tail.trim()
      ? `. Last log lines of ${model.containerName}:\n${tail.trimEnd()}`
      : "";
    return new SwapFailedError(model.id, "model_load_failed", message + logPart);
  }

  async #reconcile(): Promise<void> {
    const running = await this.#runningContainers();
    if (running.length === 0) return this.#set({ phase: "idle", loaded: null });
    const states = await Promise.all(running.map((name) => this.#docker.inspect(name)));
    states.sort((a, b) => b.startedAt.localeCompare(a.startedAt));
    const [keep, ...extra] = states;
    await Promise.all(extra.map((s) => this.#docker.stop(s.name, this.#stopTimeoutS)));
    if (extra.length > 0) {
      this.#log.warn("reconcile_stopped_extra", {
        kept: keep.name,
        stopped: extra.map((s) => s.name).join(","),
      });
    }
    const model = this.#byContainer.get(keep.name)!;
    this.#set({ phase: "reconciling", target: model.id });
    try {
      await this.#waitHealthy(model, this.#clock.now() + model.startupTimeoutMs);
      this.#set({ phase: "ready", loaded: model.id, target: null });
      this.#log.info("reconcile_adopted", { model: model.id, container: keep.name });
    } catch (err) {
      const failure = await this.#describeFailure(model, err);
      this.#log.warn("reconcile_unhealthy", { model: model.id, error: failure.message });
      this.#set({ phase: "idle", loaded: null, target: null });
    }
  }
}
