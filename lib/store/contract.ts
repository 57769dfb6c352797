/**
 * @module
 * The job-store contract both stores (Deno KV, Redis over Upstash REST) implement, and the
 * record types they keep. Two kinds of job live here:
 *
 * - `sync`: a client waits on the connection. Only the node holding that connection ever
 *   moves it, so its changes are plain writes (`record`). If that node dies, the job is
 *   marked `abandoned` by `recover` and never run again.
 * - `async`: a batch line. It waits in a lane (one per model) until a node `claim`s it; the
 *   claim holds while the node's lease is renewed by `heartbeat` (or, on a store only one
 *   process reaches, until another node `takeOver`s it). When the lease expires `recover`
 *   puts it back in its lane exactly once (or into the dead letters when its attempts are
 *   used up). `complete` only counts for the node and attempt that hold it, so a
 *   node that comes back from a long pause cannot write a second result.
 */
import type { Priority } from "../priority.ts";
import { maxAttemptsExceeded, messageOf } from "../errors.ts";
import type { GroupBucket, RecordState } from "./record_states.ts";

export type JobKind = "sync" | "async";

export interface JobRecord {
  id: string;
  kind: JobKind;
  model: string;
  priority: Priority;
  state: RecordState;
  /** Times a node started it (a claim, or a sync retry). */
  attempts: number;
  /** The node that holds it (sync: always; async: while claimed). */
  node: string | null;
  /** Async: the lane it waits in, and its place there. */
  lane: string | null;
  order: number;
  /** Async: the batch it belongs to. */
  group: string | null;
  createdAt: number;
  updatedAt: number;
  /** Async: what to run (any size; a store splits what it cannot hold in one value). */
  payload: string | null;
  /** Async: what came out, once final. */
  result: string | null;
}

/** A new async job; the store fills in state, attempts and timestamps. */
export interface NewAsyncJob {
  id: string;
  model: string;
  priority: Priority;
  lane: string;
  order: number;
  group: string;
  payload: string;
}

/** One sync job's new state, and the state it had (null when new), for the counters. */
export interface SyncChange {
  job: JobRecord;
  from: RecordState | null;
  /**
   * Sent again after a write that failed: part of that write may have landed, so `from` may
   * be stale. A store moves such a change from the state it holds (none: a new job), and
   * leaves a job it holds as final alone.
   */
  retried?: boolean;
}

export type AsyncOutcome = "done" | "failed" | "dead" | "cancelled";

export interface StoreStats {
  queued: number;
  running: number;
  dead: number;
  abandoned: number;
  /** Every job ever recorded. */
  total: number;
}

export type GroupCounts = Record<GroupBucket, number>;

/** A batch's counts from a store's counters by bucket (absent: 0). */
export function groupCountsOf(counters: ReadonlyMap<string, number>): GroupCounts {
  const n = (bucket: GroupBucket) => counters.get(bucket) ?? 0;
  return { done: n("done"), failed: n("failed"), cancelled: n("cancelled") };
}

/** The stats from a store's counters by name (absent: 0). */
export function statsOf(counters: ReadonlyMap<string, number>): StoreStats {
  const n = (name: string) => counters.get(name) ?? 0;
  return {
    queued: n("queued"),
    running: n("running"),
    dead: n("dead"),
    abandoned: n("abandoned"),
    total: n("total"),
  };
}

export interface Recovered {
  abandoned: number;
  requeued: number;
  dead: number;
}

export interface Retention {
  /** How long finished records are kept. */
  finishedMs: number;
  /** How long dead letters are kept. */
  deadMs: number;
}

/** A document with a version for compare-and-set (files and batches). */
export interface Versioned<T> {
  value: T;
  version: string;
}

/** Batch API files and batches; `kv_save`: what a model's last KV slot save left. */
export type DocKind = "file" | "batch" | "kv_save";

export interface JobStore {
  readonly name: "kv" | "redis" | "memory";

  /** Fails (rejects) when the store cannot be reached; used by /health and admission. */
  ping(): Promise<void>;

  /** Writes sync jobs' new states as one batch. */
  record(changes: readonly SyncChange[]): Promise<void>;

  /** Adds async jobs, queued in their lanes. */
  enqueue(jobs: readonly NewAsyncJob[], now: number): Promise<void>;

  /**
   * Takes up to `max` queued jobs from the head of `lane` for `node`: each becomes running
   * with one more attempt. Concurrent callers never get the same job.
   */
  claim(lane: string, node: string, max: number, now: number): Promise<JobRecord[]>;

  /** How many jobs wait in `lane`. */
  laneSize(lane: string): Promise<number>;

  /**
   * Final state of an async job, if `node` still holds it at this `attempt`; false (and no
   * change) otherwise. Adds it to its group's counts.
   */
  complete(
    id: string,
    node: string,
    attempt: number,
    outcome: AsyncOutcome,
    result: string,
    now: number,
  ): Promise<boolean>;

  /** Puts claimed jobs `node` did not start back at their place in their lanes (shutdown). */
  release(ids: readonly string[], node: string, now: number): Promise<void>;

  /** Renews `node`'s lease until `now + leaseMs`. */
  heartbeat(node: string, leaseMs: number, now: number): Promise<void>;

  /**
   * Only on a store no other process can reach (a KV file this process holds the lock of, or
   * memory): makes `node` its one live node. Every other node found in it is gone, whatever
   * its lease says, so their leases end now and the next `recover` settles their jobs at once;
   * `node`'s lease does not run out, so it needs no heartbeat.
   */
  takeOver?(node: string): Promise<void>;

  /**
   * For every node whose lease expired: its sync jobs become abandoned, its claimed async
   * jobs go back to their lanes (or to the dead letters after `maxAttempts`). Exactly once,
   * even with several nodes recovering at the same time.
   */
  recover(now: number, maxAttempts: number): Promise<Recovered>;

  get(id: string): Promise<JobRecord | null>;
  /** Records for `ids` in the same order (null where there is none). */
  getMany(ids: readonly string[]): Promise<(JobRecord | null)[]>;

  /** Cancels those of `ids` still queued (a cancelled batch); returns how many. */
  cancelQueued(ids: readonly string[], now: number): Promise<number>;
  stats(): Promise<StoreStats>;
  groupCounts(group: string): Promise<GroupCounts>;
  /** Dead letters, newest first. */
  deadLetters(limit: number): Promise<JobRecord[]>;

  /** Deletes final records older than the retention; returns how many. */
  purge(now: number, retention: Retention): Promise<number>;

  /** Bytes of any size under `id` (file contents). */
  putBlob(id: string, bytes: Uint8Array): Promise<void>;
  getBlob(id: string): Promise<Uint8Array | null>;
  deleteBlob(id: string): Promise<void>;

  /** Creates a document; false when the id exists. */
  createDoc<T>(kind: DocKind, id: string, value: T, createdAt: number): Promise<boolean>;
  getDoc<T>(kind: DocKind, id: string): Promise<Versioned<T> | null>;
  /** Replaces a document if its version is still `version`; false when it changed meanwhile. */
  replaceDoc<T>(kind: DocKind, id: string, version: string, value: T): Promise<boolean>;
  deleteDoc(kind: DocKind, id: string): Promise<void>;
  /** Documents newest first, after the one with id `after` when given. */
  listDocs<T>(kind: DocKind, limit: number, after?: string): Promise<T[]>;

  close(): Promise<void>;
}

/** Why a job went to the dead letters, in the shape batch error lines use. */
export function deadResult(attempts: number | string): string {
  return JSON.stringify({ error: maxAttemptsExceeded(attempts) });
}

/** The store could not be reached; the proxy answers 503 until it can again. */
export class StoreUnavailableError extends Error {
  constructor(store: string, cause: unknown) {
    super(`The job store (${store}) is unreachable: ${describe(cause)}`, { cause });
    this.name = "StoreUnavailableError";
  }
}

/** The cause in one short line: Upstash errors quote the whole command, payloads included. */
function describe(err: unknown): string {
  const text = messageOf(err);
  return text.split(", command was:")[0].slice(0, 200);
}
