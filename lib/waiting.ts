/**
 * @module
 * Waiting jobs indexed the way the scheduler reads them: per model, one list per priority
 * class, each in arrival order. A policy only ever looks at the heads of these lists, so a
 * decision costs O(models), not O(waiting jobs), whether 10 or 10,000 wait.
 */
import type { Priority } from "./priority.ts";

export interface Waitable {
  readonly model: string;
  readonly seq: number;
  readonly priority: Priority;
}

/** One model's waiting jobs, oldest first, per class. */
export interface ModelLine<J> {
  readonly interactive: readonly J[];
  readonly batch: readonly J[];
}

/** What policies may read. */
export interface WaitingView<J> {
  readonly size: number;
  /** Models with at least one waiting job. */
  lines(): Iterable<[string, ModelLine<J>]>;
  line(model: string): ModelLine<J> | undefined;
  /** One model's waiting jobs, both classes. */
  jobsOf(model: string): J[];
}

/** Index of `seq` in a list sorted by seq, or where it would go. */
function search<J extends Waitable>(list: readonly J[], seq: number): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (list[mid].seq < seq) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export class WaitingJobs<J extends Waitable> implements WaitingView<J> {
  readonly #lines = new Map<string, { interactive: J[]; batch: J[] }>();
  #size = 0;

  static of<J extends Waitable>(jobs: Iterable<J>): WaitingJobs<J> {
    const set = new WaitingJobs<J>();
    for (const job of jobs) set.add(job);
    return set;
  }

  get size(): number {
    return this.#size;
  }

  lines(): Iterable<[string, ModelLine<J>]> {
    return this.#lines.entries();
  }

  line(model: string): ModelLine<J> | undefined {
    return this.#lines.get(model);
  }

  jobsOf(model: string): J[] {
    const line = this.#lines.get(model);
    return line ? [...line.interactive, ...line.batch] : [];
  }

  /** Adds a job in arrival place (a retried job keeps its old place). */
  add(job: J): void {
    let line = this.#lines.get(job.model);
    if (line === undefined) {
      line = { interactive: [], batch: [] };
      this.#lines.set(job.model, line);
    }
    const list = line[job.priority];
    if (list.length === 0 || list[list.length - 1].seq < job.seq) list.push(job);
    else list.splice(search(list, job.seq), 0, job);
    this.#size++;
  }

  /** Removes a job; false when it was not waiting. */
  remove(job: J): boolean {
    const line = this.#lines.get(job.model);
    if (line === undefined) return false;
    const list = line[job.priority];
    const index = list[0] === job ? 0 : search(list, job.seq);
    if (list[index] !== job) return false;
    if (index === 0) list.shift();
    else list.splice(index, 1);
    if (line.interactive.length === 0 && line.batch.length === 0) this.#lines.delete(job.model);
    this.#size--;
    return true;
  }

  has(job: J): boolean {
    const list = this.#lines.get(job.model)?.[job.priority];
    return list !== undefined && list[search(list, job.seq)] === job;
  }

  /** 1-based place in arrival order among all waiting jobs, or 0. */
  positionOf(job: J): number {
    if (!this.has(job)) return 0;
    let before = 0;
    for (const line of this.#lines.values()) {
      before += search(line.interactive, job.seq) + search(line.batch, job.seq);
    }
    return before + 1;
  }

  /** How many jobs for the same model arrived before `job` and still wait. */
  aheadOf(job: J): number {
    const line = this.#lines.get(job.model);
    return line ? search(line.interactive, job.seq) + search(line.batch, job.seq) : 0;
  }

  /** Every waiting job in arrival order (for views and shutdown, not the hot path). */
  all(): J[] {
    const out: J[] = [];
    for (const line of this.#lines.values()) {
      for (const job of line.interactive) out.push(job);
      for (const job of line.batch) out.push(job);
    }
    return out.sort((a, b) => a.seq - b.seq);
  }
}
