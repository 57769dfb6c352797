/**
 * @module
 * The Docker and HTTP work on one model's container that a swap is made of: start it and wait
 * until it answers healthy (starting it again when something outside killed it while it
 * loaded), stop it, save and restore its slots' KV cache, and word a failure with its log
 * tail. It decides nothing: lib/swap_manager.ts says which, when, and keeps the phases.
 */
import type { Clock } from "./clock.ts";
import type { ModelConfig } from "./config_types.ts";
import { SPEC_LABEL } from "./container_spec.ts";
import type { Docker } from "./docker.ts";
import { pollUntilHealthy } from "./health.ts";
import type { KvOutcome, KvStatus, SlotKeeper } from "./kv_slots.ts";
import type { Logger } from "./log.ts";
import { shortHash } from "./short_hash.ts";
import {
  assertRunning,
  ContainerExitedError,
  describeFailure,
  SwapFailedError,
} from "./swap_failures.ts";

export interface ModelContainersOptions {
  clock: Clock;
  log: Logger;
  /** Seconds Docker waits after SIGTERM before SIGKILL. */
  stopTimeoutS: number;
  /** Log lines quoted in a failed swap's message. */
  logTailLines?: number;
  /** How often a model still loading is logged (default 10 s). */
  loadProgressMs?: number;
  /** Saves slot KV caches before a stop and restores them after a start (`kv_cache`). */
  slots?: SlotKeeper | null;
}

export class ModelContainers {
  readonly #docker: Docker;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #stopTimeoutS: number;
  readonly #logTailLines: number;
  readonly #loadProgressMs: number;
  readonly #kv: SlotKeeper | null;
  /** Ends a health poll still running at shutdown (it may wait for minutes otherwise). */
  readonly #closing = new AbortController();

  constructor(docker: Docker, options: ModelContainersOptions) {
    this.#docker = docker;
    this.#clock = options.clock;
    this.#log = options.log;
    this.#stopTimeoutS = options.stopTimeoutS;
    this.#logTailLines = options.logTailLines ?? 20;
    this.#loadProgressMs = options.loadProgressMs ?? 10_000;
    this.#kv = options.slots ?? null;
  }

  /** Gives up any health poll in progress; for shutdown. */
  close(): void {
    this.#closing.abort(new Error("The proxy is shutting down"));
  }

  /** Stops a container by name (SIGTERM, then SIGKILL after `stop_timeout`). */
  stop(name: string): Promise<void> {
    return this.#docker.stop(name, this.#stopTimeoutS);
  }

  /**
   * Starts a model's container and waits until it is healthy; returns when the last start
   * began (performance.now()). A container killed from outside while it loads (SIGKILL or
   * SIGTERM, not the OOM killer) says nothing about the model: it is started again, within the
   * same `startup_timeout`. One that exits on its own fails the load at once.
   */
  async start(model: ModelConfig): Promise<number> {
    const deadline = this.#clock.now() + model.startupTimeoutMs;
    for (;;) {
      await this.#docker.start(model.containerName);
      const started = performance.now();
      try {
        await this.waitHealthy(model, deadline);
        return started;
      } catch (err) {
        const killed = err instanceof ContainerExitedError && err.killed;
        if (!killed || this.#clock.now() >= deadline) throw err;
        this.#log.warn("load_restarted", { model: model.id, reason: (err as Error).message });
      }
    }
  }

  /** Waits until a running container answers healthy, or throws at `deadline` (clock ms). */
  async waitHealthy(model: ModelConfig, deadline: number): Promise<void> {
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

  /** A failed start or stop as the clients waiting for it read it (log tail included). */
  describe(model: ModelConfig, err: unknown): Promise<SwapFailedError> {
    return describeFailure(this.#docker, model, err, {
      logTailLines: this.#logTailLines,
      stopTimeoutS: this.#stopTimeoutS,
    });
  }

  /** Whether `model` keeps its slots' KV cache across stops: on, off, or unsupported. */
  kvStatus(model: ModelConfig): KvStatus {
    return this.#kv?.status(model) ?? "off";
  }

  /** Saves drained models' slots (kv_cache) as one outcome; never throws. */
  async saveSlots(models: readonly ModelConfig[]): Promise<KvOutcome | null> {
    const saves = await Promise.all(
      models.map((model) => this.#withSlots(model, (kv, build) => kv.save(model, build))),
    );
    return sumOutcomes(saves);
  }

  /** Restores a started model's slots before it takes requests (kv_cache); never throws. */
  restoreSlots(model: ModelConfig): Promise<KvOutcome | null> {
    return this.#withSlots(model, (kv, build) => kv.restore(model, build));
  }

  /** Runs a KV slot action for a model with `kv_cache`, given its build; null on any failure. */
  async #withSlots(
    model: ModelConfig,
    action: (kv: SlotKeeper, build: string) => Promise<KvOutcome | null>,
  ): Promise<KvOutcome | null> {
    // Off or unsupported (it answered 501): no inspect, no hash, nothing to do.
    const kv = this.#kv;
    if (kv === null || this.kvStatus(model) !== "on") return null;
    return await this.#buildOf(model).then((build) => action(kv, build)).catch(() => null);
  }

  /** Which build of a model runs: its id, its container's image and spec. */
  async #buildOf(model: ModelConfig): Promise<string> {
    const state = await this.#docker.inspect(model.containerName);
    const text = `${model.id}|${state.image}|${state.labels[SPEC_LABEL] ?? ""}`;
    return await shortHash(new TextEncoder().encode(text));
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
