/**
 * @module
 * Writes synchronous jobs' states to the store without slowing them down. Changes made within
 * a few milliseconds go out as one store call (group commit), off the request's path. A write
 * that fails is kept and sent again once the store is back, so a short outage leaves no job
 * stuck as "running" in the store.
 */
import type { Clock } from "./clock.ts";
import type { Job, JobState } from "./jobs.ts";
import type { Logger } from "./log.ts";
import type { JobRecord, JobStore, SyncChange } from "./store/contract.ts";
import type { StoreStatus } from "./store/status.ts";

/**
 * How long changes gather before one write. A request's arrival and its end then usually share
 * a write, and under load many requests do: one store commit per few milliseconds, not three
 * per request. A crash loses at most this much of the journal (those jobs were in memory only).
 * (100 ms saved CPU per request but made the Redis-outage durability test hang in one run of
 * four: not understood yet, so not taken.)
 */
const GROUP_COMMIT_MS = 5;

/** Changes kept while the store is down; beyond this, new ones are dropped (and logged). */
const MAX_PENDING = 20_000;

interface GroupCommit {
  changes: Map<string, SyncChange>;
  written: Promise<void>;
  resolve(): void;
  reject(err: unknown): void;
}

function newGroupCommit(): GroupCommit {
  const commit = { changes: new Map() } as GroupCommit;
  commit.written = new Promise<void>((resolve, reject) => {
    commit.resolve = resolve;
    commit.reject = reject;
  });
  // Most writers do not wait; an unwatched failure must not crash the process.
  commit.written.catch(() => {});
  return commit;
}

export class SyncJournal {
  readonly #store: JobStore;
  readonly #status: StoreStatus;
  readonly #node: string;
  readonly #clock: Clock;
  readonly #log: Logger;
  #next = newGroupCommit();
  /** The group commit being written, if one is. */
  #writing: Promise<void> | null = null;
  #scheduled = false;
  #dropped = 0;
  readonly #failedAddListeners: ((ids: ReadonlySet<string>, err: unknown) => void)[] = [];
  /** New jobs told of as unrecorded while the store was down, before any write of theirs. */
  readonly #toldUnwritten = new Set<string>();
  /** One observer for every job: no closure per waiting job. */
  readonly #observer = (job: Job, from: JobState) => {
    this.#put(job, from);
  };

  constructor(deps: {
    store: JobStore;
    status: StoreStatus;
    node: string;
    clock: Clock;
    log: Logger;
  }) {
    this.#store = deps.store;
    this.#status = deps.status;
    this.#node = deps.node;
    this.#clock = deps.clock;
    this.#log = deps.log;
    this.#status.onUp(() => this.#schedule());
  }

  /**
   * Calls `fn` with the ids of the jobs a failed write was the first to record, once per such
   * write, and once of each job admitted while that write was on its way. One listener for all
   * jobs: a handler per job on the write's promise kept every job of a write alive (its body,
   * its answer) until the write ended: 9 finished requests at a time at c=2, which each
   * young-generation collection then had to copy.
   */
  onFailedAdds(fn: (ids: ReadonlySet<string>, err: unknown) => void): void {
    this.#failedAddListeners.push(fn);
  }

  /** Records a new job and follows its state changes. Resolves once the store has it. */
  add(job: Job): Promise<void> {
    const written = this.#put(job, null);
    job.observe(this.#observer);
    return written;
  }

  /** Resolves once everything recorded so far was written, or the store is down. */
  async settled(): Promise<void> {
    while (this.#status.up && (this.#writing !== null || this.#next.changes.size > 0)) {
      await (this.#writing ?? this.#next.written).catch(() => {});
    }
  }

  #put(job: Job, from: JobState | null): Promise<void> {
    const commit = this.#next;
    const earlier = commit.changes.get(job.id);
    if (earlier === undefined && commit.changes.size >= MAX_PENDING) {
      if (this.#dropped++ % 1000 === 0) {
        this.#log.warn("journal_full", { dropped: this.#dropped, pending: MAX_PENDING });
      }
      return Promise.resolve();
    }
    // The store moves from the state it last saw: the first of the changes still pending.
    commit.changes.set(job.id, {
      job: this.#record(job),
      from: earlier === undefined ? from : earlier.from,
      retried: earlier?.retried,
    });
    this.#schedule();
    return commit.written;
  }

  #record(job: Job): JobRecord {
    return {
      id: job.id,
      kind: "sync",
      model: job.model,
      priority: job.priority,
      state: job.state,
      attempts: job.attempts,
      node: this.#node,
      lane: null,
      order: 0,
      group: null,
      createdAt: job.enqueuedAt,
      updatedAt: this.#clock.now(),
      payload: null,
      result: null,
    };
  }

  #schedule(): void {
    if (this.#scheduled || this.#writing !== null || this.#next.changes.size === 0) return;
    this.#scheduled = true;
    setTimeout(() => {
      this.#scheduled = false;
      this.#flush();
    }, GROUP_COMMIT_MS);
  }

  async #flush(): Promise<void> {
    if (this.#writing !== null) return;
    if (!this.#status.up) {
      // Jobs admitted while the write that found the store down was on its way: they are not
      // recorded while it is down, so they are refused as the jobs of that write were. Left
      // waiting, one would run unrecorded, or wait behind a held worker with no answer.
      this.#tellFailedAdds(this.#next, this.#status.error);
      for (const [id, change] of this.#next.changes) {
        if (change.from === null) this.#toldUnwritten.add(id);
      }
      return;
    }
    const commit = this.#next;
    this.#next = newGroupCommit();
    this.#writing = commit.written;
    try {
      await this.#store.record([...commit.changes.values()]);
      commit.resolve();
      if (this.#toldUnwritten.size > 0) {
        for (const id of commit.changes.keys()) this.#toldUnwritten.delete(id);
      }
    } catch (err) {
      const down = this.#status.down(err);
      commit.reject(down);
      this.#keep(commit);
      this.#tellFailedAdds(commit, down);
    } finally {
      this.#writing = null;
      this.#schedule();
    }
  }

  #tellFailedAdds(failed: GroupCommit, err: unknown): void {
    if (this.#failedAddListeners.length === 0) return;
    const ids = new Set<string>();
    for (const [id, change] of failed.changes) {
      // A change sent again was a new job in the write that failed first, and told then.
      if (change.from === null && !change.retried && !this.#toldUnwritten.has(id)) ids.add(id);
    }
    if (ids.size === 0) return;
    for (const fn of this.#failedAddListeners) fn(ids, err);
  }

  /** Puts a failed group commit's changes back in front of newer ones for the next try. */
  #keep(failed: GroupCommit): void {
    const newer = this.#next.changes;
    for (const [id, change] of failed.changes) {
      const later = newer.get(id);
      const job = later === undefined ? change.job : later.job;
      newer.set(id, { job, from: change.from, retried: true });
    }
  }
}
