/**
 * @module
 * `ttl`: a ready model that nothing waited for or ran on that long is unloaded. One timer, for
 * the earliest expiry, re-armed whenever the dispatcher settles.
 */
import type { Clock } from "./clock.ts";
import type { Logger } from "./log.ts";
import type { ModelSnapshot, SwapManager } from "./swap_manager.ts";

export interface IdleUnloadDeps {
  models: Pick<SwapManager, "snapshot" | "unload">;
  clock: Clock;
  log: Logger;
  /** A model's `ttl` in ms, or null when it has none. */
  ttlOf(model: string): number | null;
  /** Whether requests wait for `model`. */
  hasWaiting(model: string): boolean;
  /** Decides again once an unload began. */
  pump(): void;
}

export class IdleUnload {
  readonly #deps: IdleUnloadDeps;
  #timer: ReturnType<typeof setTimeout> | null = null;
  /**
   * Models whose unload was asked and has not settled: it may wait behind the swap lock, and
   * the model stays ready meanwhile, which must not set the timer again at once.
   */
  readonly #pending = new Set<string>();

  constructor(deps: IdleUnloadDeps) {
    this.#deps = deps;
  }

  /** Sets the one timer for the earliest expiry among `snap`'s idle residents. */
  arm(snap: ModelSnapshot): void {
    this.stop();
    const expiries = this.#expiries(snap);
    if (expiries.length === 0) return;
    const { clock, log, models } = this.#deps;
    const at = Math.min(...expiries.map((e) => e.at));
    this.#timer = setTimeout(() => {
      this.#timer = null;
      const now = clock.now();
      for (const { model, at, ttlMs } of this.#expiries(models.snapshot())) {
        if (now < at) continue;
        this.#pending.add(model);
        // The unload may wait behind a load that holds the swap lock, while the model serves
        // on: once it may go ahead, the model must still be idle that long.
        const stillIdle = (id: string) => {
          const r = models.snapshot().residents.find((resident) => resident.model === id);
          const expired = r !== undefined && this.#idle(r) && clock.now() >= r.lastUsed + ttlMs;
          if (expired) log.info("idle_unload", { model, ttl_s: ttlMs / 1000 });
          return expired;
        };
        models.unload("idle", model, stillIdle).catch((err) =>
          log.warn("idle_unload_failed", { model, error: String(err) })
        ).finally(() => {
          this.#pending.delete(model);
          // One the check kept (it was used meanwhile) needs its timer again.
          this.#deps.pump();
        });
      }
      this.#deps.pump();
    }, Math.max(0, at - clock.now()));
  }

  stop(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  /** Ready residents with a `ttl`, idle and not being unloaded, and when they expire. */
  #expiries(snap: ModelSnapshot) {
    const expiries: { model: string; at: number; ttlMs: number }[] = [];
    for (const r of snap.residents) {
      const ttlMs = this.#deps.ttlOf(r.model);
      if (ttlMs === null || this.#pending.has(r.model) || !this.#idle(r)) continue;
      expiries.push({ model: r.model, at: r.lastUsed + ttlMs, ttlMs });
    }
    return expiries;
  }

  /** Ready, with nothing running on it and nothing waiting for it. */
  #idle(r: ModelSnapshot["residents"][number]): boolean {
    return r.phase === "ready" && r.inflight === 0 && !this.#deps.hasWaiting(r.model);
  }
}
