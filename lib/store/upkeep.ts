/**
 * @module
 * Keeps this node's lease alive, recovers the jobs of nodes that died (their sync jobs
 * become abandoned, their batch lines run again), and purges records past retention.
 *
 * A store only this process can reach (a KV file, memory) is taken over at start instead:
 * whoever used it before is gone, so their jobs are settled at once rather than when their
 * leases run out, and nothing needs renewing or watching after. An idle proxy then wakes for
 * none of it: on some machines each wake costs milliseconds of CPU (docs/performance.md).
 */
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { JobStore, Retention } from "./contract.ts";
import type { StoreStatus } from "./status.ts";
import { messageOf } from "../errors.ts";

const PURGE_EVERY_MS = 10 * 60_000;

export interface UpkeepDeps {
  store: JobStore;
  status: StoreStatus;
  node: string;
  clock: Clock;
  log: Logger;
  leaseMs: number;
  maxAttempts: number;
  retention: Retention;
  /** Called after a recovery put batch lines back in their lanes. */
  onRequeued?(): void;
}

export class StoreUpkeep {
  readonly #deps: UpkeepDeps;
  readonly #timers: ReturnType<typeof setInterval>[] = [];
  /** Recovery and purge started with the node, off the start-up path. */
  #firstRound: Promise<void> = Promise.resolve();

  constructor(deps: UpkeepDeps) {
    this.#deps = deps;
  }

  /**
   * The take-over or first heartbeat (our lease must exist before our first job does), then
   * recovery and purge in the background, and the timers. Store failures are not fatal.
   */
  async start(): Promise<void> {
    const { store, leaseMs } = this.#deps;
    if (store.takeOver === undefined) {
      await this.heartbeat();
      this.#firstRound = this.#settle();
      this.#timers.push(setInterval(() => this.heartbeat(), leaseMs / 3));
      this.#timers.push(setInterval(() => this.recover(), leaseMs / 2));
    } else {
      await this.#takeOver(store.takeOver.bind(store));
    }
    this.#timers.push(setInterval(() => this.purge(), PURGE_EVERY_MS));
  }

  /**
   * Makes this node the store's one live node, then settles the nodes before it. A store down
   * at start is taken over once it is back: no request is admitted while it is down, and the
   * take-over is done before the recovery that could otherwise take our first jobs for a dead
   * node's.
   */
  async #takeOver(takeOver: (node: string) => Promise<void>): Promise<void> {
    const { status, node, log } = this.#deps;
    let taken = false;
    const attempt = async () => {
      try {
        await status.run(() => takeOver(node));
      } catch (err) {
        return log.warn("store_take_over_failed", { error: messageOf(err) });
      }
      taken = true;
      this.#firstRound = this.#settle();
    };
    await attempt();
    if (taken) return;
    status.onUp(() => {
      if (!taken) void attempt();
    });
  }

  #settle(): Promise<void> {
    return this.recover().then(() => this.purge());
  }

  async heartbeat(): Promise<void> {
    const { store, status, node, leaseMs, clock } = this.#deps;
    await status.run(() => store.heartbeat(node, leaseMs, clock.now())).catch(() => {});
  }

  async recover(): Promise<void> {
    const { store, status, clock, maxAttempts, log } = this.#deps;
    try {
      const found = await status.run(() => store.recover(clock.now(), maxAttempts));
      if (found.abandoned + found.requeued + found.dead === 0) return;
      log.warn("recovered_jobs", { ...found, note: "left by a proxy that stopped" });
      if (found.requeued > 0) this.#deps.onRequeued?.();
    } catch {
      // Marked down; the next round tries again.
    }
  }

  async purge(): Promise<void> {
    const { store, status, clock, retention, log } = this.#deps;
    try {
      const purged = await status.run(() => store.purge(clock.now(), retention));
      if (purged > 0) log.info("purged_jobs", { records: purged });
    } catch {
      // Marked down; the next round tries again.
    }
  }

  async close(): Promise<void> {
    for (const timer of this.#timers) clearInterval(timer);
    await this.#firstRound;
  }
}
