/**
 * @module
 * The resident set: every configured model that is not stopped, with its phase
 * (stopped → starting → ready → draining → stopping → stopped), its leases (requests it serves)
 * and when it was last used. `move()` is the only writer of a phase and follows the transition
 * table; a lease is only granted on a ready model that no placement is about to stop. Pure
 * bookkeeping with an injected clock: the swap manager (lib/swap_manager.ts) decides, this
 * remembers, and tells its listener of every change.
 */
import type { Clock } from "./clock.ts";
import type { Occupant } from "./placement.ts";

/** What one model's container is doing. */
export type ModelPhase = "stopped" | "starting" | "ready" | "draining" | "stopping";

/** The only moves a phase makes; `move()` refuses any other (a bug, not a user error). */
const TRANSITIONS: Readonly<Record<ModelPhase, readonly ModelPhase[]>> = {
  stopped: ["starting"],
  // stopped: an adopted container that never became healthy and exited on its own.
  starting: ["ready", "stopping", "stopped"],
  // stopped: the container died under it (crash, OOM, someone's docker stop).
  ready: ["draining", "stopped"],
  draining: ["stopping", "stopped"],
  stopping: ["stopped"],
};

export interface ResidentSnapshot {
  model: string;
  phase: Exclude<ModelPhase, "stopped">;
  /** When it entered this phase (clock ms). */
  since: number;
  /** Requests it serves right now. */
  inflight: number;
  /** Last time a request started or ended on it, or it became ready (clock ms). */
  lastUsed: number;
  /** A placement decided to stop it: it takes no new request, even while still ready. */
  evicting: boolean;
}

export interface Lease {
  release(): void;
}

interface Residency {
  phase: ModelPhase;
  since: number;
  leases: number;
  lastUsed: number;
  /** Placements that will stop it (each marks and unmarks its own). */
  evicting: number;
  drainWaiters: (() => void)[];
}

export class ResidentSet {
  /** Every model that is not stopped; a stopped one has no entry. */
  readonly #residents = new Map<string, Residency>();
  readonly #clock: Clock;
  readonly #onChange: () => void;
  #since: number;

  /** `onChange` hears every change of a phase or of the evicting marks, never a lease. */
  constructor(clock: Clock, onChange: () => void) {
    this.#clock = clock;
    this.#onChange = onChange;
    this.#since = clock.now();
  }

  /** When a phase last changed (clock ms). */
  get since(): number {
    return this.#since;
  }

  get size(): number {
    return this.#residents.size;
  }

  ids(): string[] {
    return [...this.#residents.keys()];
  }

  has(id: string): boolean {
    return this.#residents.has(id);
  }

  phaseOf(id: string): ModelPhase {
    return this.#residents.get(id)?.phase ?? "stopped";
  }

  /** Every resident, in the order they joined. */
  list(): ResidentSnapshot[] {
    return [...this.#residents].map(([model, slot]) => ({
      model,
      phase: slot.phase as ResidentSnapshot["phase"],
      since: slot.since,
      inflight: slot.leases,
      lastUsed: slot.lastUsed,
      evicting: slot.evicting > 0,
    }));
  }

  /** Residents, for placement: a model that is not stopped occupies its memory and port. */
  occupants(): Occupant[] {
    return [...this.#residents].map(([model, slot]) => ({ model, lastUsed: slot.lastUsed }));
  }

  /**
   * Claims a ready model for one request, or returns null when `id` is not ready or a
   * placement is about to stop it. A drain waits until every lease is released.
   */
  lease(id: string): Lease | null {
    const slot = this.#residents.get(id);
    if (slot?.phase !== "ready" || slot.evicting > 0) return null;
    slot.leases++;
    slot.lastUsed = this.#clock.now();
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        slot.leases--;
        slot.lastUsed = this.#clock.now();
        if (slot.leases === 0) wakeAll(slot);
        // No change event: the holder pumps its own queue after releasing, and listeners
        // (the batch runner claims from the store on each) follow residency, not requests.
      },
    };
  }

  /**
   * Marks residents a placement will stop, from its decision on: they take no new request
   * meanwhile. Each placement unmarks what it marked (`unmarkEvicting()`), or their stop does.
   */
  markEvicting(ids: readonly string[]): void {
    this.#countEvicting(ids, 1);
  }

  unmarkEvicting(ids: readonly string[]): void {
    this.#countEvicting(ids, -1);
  }

  #countEvicting(ids: readonly string[], by: 1 | -1): void {
    let changed = false;
    for (const id of ids) {
      const slot = this.#residents.get(id);
      if (slot === undefined) continue;
      const before = slot.evicting > 0;
      slot.evicting = Math.max(0, slot.evicting + by);
      changed ||= before !== slot.evicting > 0;
    }
    if (changed) this.#onChange();
  }

  /** Takes `id` out of service and waits for its requests in flight (never cut a stream). */
  async drain(id: string): Promise<void> {
    this.move(id, "draining");
    const slot = this.#residents.get(id)!;
    if (slot.leases > 0) await new Promise<void>((resolve) => slot.drainWaiters.push(resolve));
  }

  /** The one writer of phases: moves `id` along the transition table, or throws. */
  move(id: string, to: ModelPhase): void {
    const from = this.phaseOf(id);
    if (!TRANSITIONS[from].includes(to)) {
      throw new Error(`model ${id}: no transition from ${from} to ${to}`);
    }
    const now = this.#clock.now();
    const slot = this.#residents.get(id);
    if (to === "stopped") {
      this.#residents.delete(id);
      // Nobody waits for requests of a container that is gone.
      wakeAll(slot!);
    } else if (slot === undefined) {
      this.#residents.set(id, {
        phase: to,
        since: now,
        leases: 0,
        lastUsed: now,
        evicting: 0,
        drainWaiters: [],
      });
    } else {
      slot.phase = to;
      slot.since = now;
      if (to === "ready") slot.lastUsed = now;
    }
    this.#since = now;
    this.#onChange();
  }

  /** A resident whose container is gone (died, or Docker lost it): stopped, from any phase. */
  forget(id: string): void {
    if (this.phaseOf(id) !== "stopped") this.move(id, "stopped");
  }
}

function wakeAll(slot: Residency): void {
  for (const wake of slot.drainWaiters.splice(0)) wake();
}
