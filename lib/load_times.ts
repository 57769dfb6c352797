/**
 * @module
 * Learned start-to-healthy time of each model: a moving average of observed loads, seeded
 * from the config (`load_time`, else `startup_timeout`). It feeds waiting clients' ETAs.
 */
import type { ModelConfig } from "./config_types.ts";

/** Weight of the newest observation. */
const ALPHA = 0.3;

export class LoadTimes {
  readonly #estimates = new Map<string, number>();
  readonly #observed = new Set<string>();

  constructor(models: readonly ModelConfig[]) {
    for (const model of models) this.#estimates.set(model.id, model.loadTimeHintMs);
  }

  /** A reloaded model list: new models start from their hint, learned times are kept. */
  reconfigure(models: readonly ModelConfig[]): void {
    for (const model of models) {
      if (!this.#observed.has(model.id)) this.#estimates.set(model.id, model.loadTimeHintMs);
    }
  }

  /** Records one load; the first observation replaces the config's guess. */
  observe(model: string, ms: number): void {
    const previous = this.#estimates.get(model);
    const first = !this.#observed.has(model) || previous === undefined;
    this.#estimates.set(model, first ? ms : previous + ALPHA * (ms - previous));
    this.#observed.add(model);
  }

  /** Expected load time in ms. */
  estimate(model: string): number {
    return this.#estimates.get(model) ?? 0;
  }

  /** Whether the estimate comes from real loads rather than the config. */
  learned(model: string): boolean {
    return this.#observed.has(model);
  }
}
