/**
 * @module
 * The job store on Deno KV (SQLite under the data dir, or in memory). Transitions are KV
 * atomics guarded by versionstamp checks, so two takers (or two recoverers) racing for one
 * job get one winner. KV holds at most 64 KiB per value: texts and blobs above that are
 * split into chunks written before the record that points at them.
 *
 * Over 350 lines on purpose: every method is one JobStore operation over the same
 * key layout (job, lane, active, count, finished, deadidx, group, brief, blob, doc), and the
 * atomics only stay right while that layout is written in one place. What a brief entry
 * holds, and how one is searched, is lib/store/brief_jobs.ts.
 */
import {
  type AsyncOutcome,
  deadResult,
  type DocKind,
  type GroupCounts,
  groupCountsOf,
  type JobRecord,
  type JobStore,
  type NewAsyncJob,
  type Recovered,
  type Retention,
  statsOf,
  type StoreStats,
  type SyncChange,
  type Versioned,
} from "./contract.ts";
import {
  COUNTED_STATES,
  GROUP_BUCKETS,
  groupBucket,
  isCounted,
  isFinal,
  type RecordState,
} from "./record_states.ts";
import { BRIEF, briefEntries, briefRecords, findBrief, splitBrief } from "./brief_jobs.ts";
import { lockStoreFile } from "./file_lock.ts";

const CHUNK_BYTES = 60_000;
/** Strings are stored as UTF-16 at worst: 2 bytes a character, well under 64 KiB. */
const INLINE_CHARS = 24_000;
/** Atomic limits are 1000 mutations and 800 KB; stay well inside both. */
const JOBS_PER_ATOMIC = 100;
/** Brief entries are up to ~48 KB each: eight stay well inside an atomic's 800 KB. */
const BRIEF_ENTRIES_PER_ATOMIC = 8;
/**
 * Sync jobs with their own record beside the brief entries: up to three mutations (record,
 * active, finished) and ~1 KB each, so with eight entries an atomic stays under both limits.
 */
const SYNC_JOBS_PER_ATOMIC = 200;
/** Expired brief entries deleted per atomic (KV allows 1000 mutations). */
const BRIEF_DELETES_PER_ATOMIC = 500;
/** Claims in one atomic: each adds two checks and up to five mutations. */
const CLAIMS_PER_ATOMIC = 10;
/** KV u64 sums wrap at 2^64: adding 2^64 - k subtracts k. */
const U64_WRAP = 1n << 64n;
const MINUS_ONE = U64_WRAP - 1n;
const PLUS_ONE = 1n;

/** A job as kept in KV: big texts live in blobs and are marked here. */
interface StoredJob extends JobRecord {
  payloadInBlob?: boolean;
  resultInBlob?: boolean;
}

export class KvJobStore implements JobStore {
  readonly name: "kv" | "memory";
  readonly #kv: Deno.Kv;
  /** Held while the store is open: no other process uses the file meanwhile. */
  readonly #lock: Deno.FsFile | null;

  private constructor(kv: Deno.Kv, name: "kv" | "memory", lock: Deno.FsFile | null) {
    this.#kv = kv;
    this.name = name;
    this.#lock = lock;
  }

  /**
   * Opens (creating if needed) the KV file at `path`, or an in-memory store for ":memory:".
   * @throws StoreInUseError when another process has the file open.
   */
  static async open(path: string): Promise<KvJobStore> {
    if (path === ":memory:") return new KvJobStore(await Deno.openKv(path), "memory", null);
    const dir = path.replace(/\/[^/]*$/, "");
    if (dir !== path && dir !== "") await Deno.mkdir(dir, { recursive: true });
    const lock = await lockStoreFile(path);
    try {
      return new KvJobStore(await Deno.openKv(path), "kv", lock);
    } catch (err) {
      lock.close();
      throw err;
    }
  }

  async ping(): Promise<void> {
    await this.#kv.get(["count", "total"]);
  }

  async record(changes: readonly SyncChange[]): Promise<void> {
    const { brief, single } = splitBrief(await this.#fromStored(changes));
    const entries = briefEntries(brief);
    // A write of the usual size is one atomic, all or nothing, and one commit (one fsync).
    for (
      let e = 0, j = 0;
      e < entries.length || j < single.length;
      e += BRIEF_ENTRIES_PER_ATOMIC, j += SYNC_JOBS_PER_ATOMIC
    ) {
      const op = this.#kv.atomic();
      const counts = new CountDeltas();
      for (const { key, text, size } of entries.slice(e, e + BRIEF_ENTRIES_PER_ATOMIC)) {
        op.set(key, text);
        // Brief jobs are final in a state no live counter follows: only the total moves.
        counts.add("total", size);
      }
      for (const { job, from } of single.slice(j, j + SYNC_JOBS_PER_ATOMIC)) {
        op.set(["job", job.id], job);
        if (from === null) counts.add("total", 1);
        counts.move(from, job.state);
        if (isFinal(job.state)) {
          // A job that arrived and finished within one write was never active.
          if (from !== null) op.delete(["active", job.node!, job.id]);
          op.set(["finished", job.updatedAt, job.id], true);
        } else if (from === null) {
          op.set(["active", job.node!, job.id], true);
        }
      }
      counts.applyTo(op);
      await commitOrThrow(op);
    }
  }

  /**
   * Changes sent again after a failed write move from the state the store holds, as the Redis
   * store's script does, since any part of that write may have landed: each job is counted
   * once, and one already final (its last change landed, or a recovery abandoned it) stays as
   * it is. One read per ten such jobs, and only after a failure.
   */
  async #fromStored(changes: readonly SyncChange[]): Promise<readonly SyncChange[]> {
    // Every group commit passes here: no array unless a write failed before.
    if (!changes.some((change) => change.retried)) return changes;
    const retried = changes.filter((change) => change.retried);
    const stored = await this.getMany(retried.map(({ job }) => job.id));
    const held = new Map(retried.map(({ job }, i) => [job.id, stored[i]]));
    return changes.flatMap((change): SyncChange[] => {
      if (!change.retried) return [change];
      const state = held.get(change.job.id)?.state ?? null;
      return state !== null && isFinal(state) ? [] : [{ job: change.job, from: state }];
    });
  }

  async enqueue(jobs: readonly NewAsyncJob[], now: number): Promise<void> {
    for (let i = 0; i < jobs.length; i += JOBS_PER_ATOMIC) {
      const op = this.#kv.atomic();
      const counts = new CountDeltas();
      for (const init of jobs.slice(i, i + JOBS_PER_ATOMIC)) {
        const job: StoredJob = {
          ...init,
          kind: "async",
          state: "queued",
          attempts: 0,
          node: null,
          createdAt: now,
          updatedAt: now,
          result: null,
        };
        if (init.payload.length > INLINE_CHARS) {
          await this.#putText(`payload:${init.id}`, init.payload);
          job.payload = null;
          job.payloadInBlob = true;
        }
        op.set(["job", job.id], job);
        op.set(["lane", init.lane, init.order, init.id], true);
        counts.add("total", 1);
        counts.add("queued", 1);
      }
      counts.applyTo(op);
      await commitOrThrow(op);
    }
  }

  async claim(lane: string, node: string, max: number, now: number): Promise<JobRecord[]> {
    const claimed: JobRecord[] = [];
    while (claimed.length < max) {
      const heads: Deno.KvEntry<true>[] = [];
      const want = Math.min(max - claimed.length, CLAIMS_PER_ATOMIC);
      for await (const head of this.#kv.list<true>({ prefix: ["lane", lane] }, { limit: want })) {
        heads.push(head);
      }
      if (heads.length === 0) break;
      const entries = await this.#kv.getMany<StoredJob[]>(
        heads.map((head) => ["job", head.key[3] as string]),
      );
      // One atomic for the lot: every head and job must be as read, or nothing is taken.
      const op = this.#kv.atomic();
      const taken: StoredJob[] = [];
      heads.forEach((head, i) => {
        const entry = entries[i];
        op.check(head, entry).delete(head.key);
        if (entry.value === null || entry.value.state !== "queued") return; // stale head
        const job: StoredJob = {
          ...entry.value,
          state: "running",
          node,
          attempts: entry.value.attempts + 1,
          updatedAt: now,
        };
        op.set(["job", job.id], job).set(["active", node, job.id], true);
        count(op, "queued", "running");
        taken.push(job);
      });
      // Lost a race with another taker: read the lane again.
      if (!(await op.commit()).ok) continue;
      for (const job of taken) claimed.push(await this.#load(job));
    }
    return claimed;
  }

  async laneSize(lane: string): Promise<number> {
    let size = 0;
    for await (const _ of this.#kv.list({ prefix: ["lane", lane] })) size++;
    return size;
  }

  async complete(
    id: string,
    node: string,
    attempt: number,
    outcome: AsyncOutcome,
    result: string,
    now: number,
  ): Promise<boolean> {
    const entry = await this.#kv.get<StoredJob>(["job", id]);
    const held = entry.value;
    if (held === null || held.state !== "running" || held.node !== node) return false;
    if (held.attempts !== attempt) return false;
    const job: StoredJob = { ...held, state: outcome, updatedAt: now, result };
    if (result.length > INLINE_CHARS) {
      await this.#putText(`result:${id}`, result);
      job.result = null;
      job.resultInBlob = true;
    }
    const op = this.#kv.atomic().check(entry).set(["job", id], job).delete(["active", node, id]);
    count(op, "running", outcome);
    this.#finishIndex(op, job);
    return (await op.commit()).ok;
  }

  async release(ids: readonly string[], node: string, now: number): Promise<void> {
    for (const id of ids) {
      const entry = await this.#kv.get<StoredJob>(["job", id]);
      const held = entry.value;
      if (held === null || held.state !== "running" || held.node !== node) continue;
      const op = this.#kv.atomic().check(entry).delete(["active", node, id]);
      const job = requeue(op, { ...held, attempts: held.attempts - 1, updatedAt: now });
      op.set(["job", id], job);
      count(op, "running", "queued");
      await op.commit();
    }
  }

  async heartbeat(node: string, leaseMs: number, now: number): Promise<void> {
    await this.#kv.set(["node", node], now + leaseMs);
  }

  async takeOver(node: string): Promise<void> {
    for await (const lease of this.#kv.list<number>({ prefix: ["node"] })) {
      if (lease.key[1] !== node) await this.#kv.delete(lease.key);
    }
    await this.#kv.set(["node", node], Number.MAX_SAFE_INTEGER);
  }

  async recover(now: number, maxAttempts: number): Promise<Recovered> {
    const recovered: Recovered = { abandoned: 0, requeued: 0, dead: 0 };
    const leases = new Map<string, number>();
    for await (const lease of this.#kv.list<number>({ prefix: ["node"] })) {
      leases.set(lease.key[1] as string, lease.value);
    }
    for (const node of await this.#activeNodes()) {
      if ((leases.get(node) ?? 0) > now) continue;
      await this.#recoverNode(node, now, maxAttempts, recovered);
    }
    for (const [node, until] of leases) {
      if (until <= now) await this.#kv.delete(["node", node]);
    }
    return recovered;
  }

  /**
   * The nodes that hold active jobs, one read per node: the jobs of a live node are never
   * walked. (Walking every active job made each round, every lease/2 before a KV file was
   * taken over rather than leased, read all 10,000 jobs waiting on this node: ~100 ms of CPU
   * in an otherwise idle process.)
   */
  async #activeNodes(): Promise<string[]> {
    const nodes: string[] = [];
    let selector: Deno.KvListSelector = { prefix: ["active"] };
    for (;;) {
      let node: string | undefined;
      for await (const first of this.#kv.list<true>(selector, { limit: 1 })) {
        node = first.key[1] as string;
      }
      if (node === undefined) return nodes;
      nodes.push(node);
      // The first key after every ["active", node, id]: KV orders a string's keys before
      // those of any longer string it begins, and "\0" is the smallest continuation.
      selector = { prefix: ["active"], start: ["active", node + "\0"] };
    }
  }

  async #recoverNode(
    node: string,
    now: number,
    maxAttempts: number,
    recovered: Recovered,
  ): Promise<void> {
    for await (const active of this.#kv.list<true>({ prefix: ["active", node] })) {
      const id = active.key[2] as string;
      const entry = await this.#kv.get<StoredJob>(["job", id]);
      const held = entry.value;
      const op = this.#kv.atomic().check(active, entry).delete(active.key);
      if (held === null || held.node !== node || isFinal(held.state)) {
        await op.commit();
        continue;
      }
      let job: StoredJob;
      if (held.kind === "sync") {
        job = { ...held, state: "abandoned", updatedAt: now };
        this.#finishIndex(op, job);
      } else if (held.attempts >= maxAttempts) {
        job = { ...held, state: "dead", updatedAt: now, result: deadResult(held.attempts) };
        this.#finishIndex(op, job);
      } else {
        job = requeue(op, { ...held, updatedAt: now });
      }
      count(op, held.state, job.state);
      op.set(["job", id], job);
      if (!(await op.commit()).ok) continue;
      if (job.state === "abandoned") recovered.abandoned++;
      else if (job.state === "dead") recovered.dead++;
      else recovered.requeued++;
    }
  }

  async get(id: string): Promise<JobRecord | null> {
    const entry = await this.#kv.get<StoredJob>(["job", id]);
    return entry.value === null ? await this.#brief(id) : await this.#load(entry.value);
  }

  #brief(id: string): Promise<JobRecord | null> {
    return findBrief(
      id,
      // The record is in one of the first few: no prefetch of a hundred entries of ~24 KB.
      (start) =>
        this.#kv.list<string>({ prefix: [BRIEF], start: [BRIEF, start] }, { batchSize: 4 }),
    );
  }

  async getMany(ids: readonly string[]): Promise<(JobRecord | null)[]> {
    const records: (JobRecord | null)[] = [];
    for (let i = 0; i < ids.length; i += 10) {
      const entries = await this.#kv.getMany<StoredJob[]>(
        ids.slice(i, i + 10).map((id) => ["job", id]),
      );
      for (const [j, entry] of entries.entries()) {
        const id = ids[i + j];
        records.push(entry.value === null ? await this.#brief(id) : await this.#load(entry.value));
      }
    }
    return records;
  }

  async cancelQueued(ids: readonly string[], now: number): Promise<number> {
    let cancelled = 0;
    for (const id of ids) {
      const entry = await this.#kv.get<StoredJob>(["job", id]);
      const held = entry.value;
      if (held === null || held.state !== "queued" || held.kind !== "async") continue;
      const job: StoredJob = { ...held, state: "cancelled", updatedAt: now };
      const op = this.#kv.atomic().check(entry).set(["job", id], job)
        .delete(["lane", held.lane!, held.order, id]);
      count(op, "queued", "cancelled");
      this.#finishIndex(op, job);
      if ((await op.commit()).ok) cancelled++;
    }
    return cancelled;
  }

  async stats(): Promise<StoreStats> {
    const names = [...COUNTED_STATES, "total"];
    const values = await this.#kv.getMany<Deno.KvU64[]>(names.map((name) => ["count", name]));
    return statsOf(new Map(names.map((name, i) => [name, Number(values[i].value?.value ?? 0n)])));
  }

  async groupCounts(group: string): Promise<GroupCounts> {
    const keys = GROUP_BUCKETS.map((bucket) => ["group", group, bucket]);
    const values = await this.#kv.getMany<Deno.KvU64[]>(keys);
    return groupCountsOf(
      new Map(GROUP_BUCKETS.map((bucket, i) => [bucket, Number(values[i].value?.value ?? 0n)])),
    );
  }

  async deadLetters(limit: number): Promise<JobRecord[]> {
    const jobs: JobRecord[] = [];
    for await (const entry of this.#kv.list({ prefix: ["deadidx"] }, { reverse: true, limit })) {
      const job = await this.get(entry.key[2] as string);
      if (job !== null) jobs.push(job);
    }
    return jobs;
  }

  async purge(now: number, retention: Retention): Promise<number> {
    let purged = 0;
    for (
      const [index, keepMs] of [["finished", retention.finishedMs], [
        "deadidx",
        retention.deadMs,
      ]] as const
    ) {
      const old = this.#kv.list<true>({ prefix: [index], end: [index, now - keepMs] });
      for await (const entry of old) {
        const id = entry.key[2] as string;
        const job = await this.#kv.get<StoredJob>(["job", id]);
        const op = this.#kv.atomic().delete(entry.key).delete(["job", id]);
        if (index === "deadidx") op.sum(["count", "dead"], MINUS_ONE);
        await commitOrThrow(op);
        if (job.value?.payloadInBlob) await this.deleteBlob(`payload:${id}`);
        if (job.value?.resultInBlob) await this.deleteBlob(`result:${id}`);
        purged++;
      }
    }
    const old = this.#kv.list<string>({
      prefix: [BRIEF],
      end: [BRIEF, now - retention.finishedMs],
    });
    let op = this.#kv.atomic();
    let pending = 0;
    for await (const entry of old) {
      op.delete(entry.key);
      purged += briefRecords(entry.value).length;
      if (++pending < BRIEF_DELETES_PER_ATOMIC) continue;
      await commitOrThrow(op);
      op = this.#kv.atomic();
      pending = 0;
    }
    if (pending > 0) await commitOrThrow(op);
    return purged;
  }

  async putBlob(id: string, bytes: Uint8Array): Promise<void> {
    await this.deleteBlob(id);
    const chunks = Math.ceil(bytes.length / CHUNK_BYTES);
    for (let first = 0; first < chunks; first += 10) {
      const op = this.#kv.atomic();
      for (let i = first; i < Math.min(chunks, first + 10); i++) {
        op.set(["blobdata", id, i], bytes.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES));
      }
      await commitOrThrow(op);
    }
    // The length is written last: a reader never sees a blob whose chunks are missing.
    await this.#kv.set(["blob", id], bytes.length);
  }

  async getBlob(id: string): Promise<Uint8Array | null> {
    const size = await this.#kv.get<number>(["blob", id]);
    if (size.value === null) return null;
    const bytes = new Uint8Array(size.value);
    let at = 0;
    for await (const chunk of this.#kv.list<Uint8Array>({ prefix: ["blobdata", id] })) {
      bytes.set(chunk.value, at);
      at += chunk.value.length;
    }
    if (at !== size.value) {
      throw new Error(`Blob ${id} is incomplete (${at} of ${size.value} bytes)`);
    }
    return bytes;
  }

  async deleteBlob(id: string): Promise<void> {
    await this.#kv.delete(["blob", id]);
    for await (const chunk of this.#kv.list({ prefix: ["blobdata", id] })) {
      await this.#kv.delete(chunk.key);
    }
  }

  async createDoc<T>(kind: DocKind, id: string, value: T, createdAt: number): Promise<boolean> {
    const key = ["doc", kind, id];
    const result = await this.#kv.atomic().check({ key, versionstamp: null }).set(key, value)
      .set(["docidx", kind, createdAt, id], true).set(["doctime", kind, id], createdAt).commit();
    return result.ok;
  }

  async getDoc<T>(kind: DocKind, id: string): Promise<Versioned<T> | null> {
    const entry = await this.#kv.get<T>(["doc", kind, id]);
    if (entry.value === null || entry.versionstamp === null) return null;
    return { value: entry.value, version: entry.versionstamp };
  }

  async replaceDoc<T>(kind: DocKind, id: string, version: string, value: T): Promise<boolean> {
    const key = ["doc", kind, id];
    return (await this.#kv.atomic().check({ key, versionstamp: version }).set(key, value).commit())
      .ok;
  }

  async deleteDoc(kind: DocKind, id: string): Promise<void> {
    const time = await this.#kv.get<number>(["doctime", kind, id]);
    const op = this.#kv.atomic().delete(["doc", kind, id]).delete(["doctime", kind, id]);
    if (time.value !== null) op.delete(["docidx", kind, time.value, id]);
    await commitOrThrow(op);
  }

  async listDocs<T>(kind: DocKind, limit: number, after?: string): Promise<T[]> {
    const docs: T[] = [];
    let skipping = after !== undefined;
    for await (const entry of this.#kv.list({ prefix: ["docidx", kind] }, { reverse: true })) {
      const id = entry.key[3] as string;
      if (skipping) {
        skipping = id !== after;
        continue;
      }
      const doc = await this.#kv.get<T>(["doc", kind, id]);
      if (doc.value !== null) docs.push(doc.value);
      if (docs.length >= limit) break;
    }
    return docs;
  }

  close(): Promise<void> {
    this.#kv.close();
    this.#lock?.close();
    return Promise.resolve();
  }

  #finishIndex(op: Deno.AtomicOperation, job: JobRecord): void {
    if (job.state === "dead") op.set(["deadidx", job.updatedAt, job.id], true);
    else op.set(["finished", job.updatedAt, job.id], true);
    const bucket = groupBucket(job.state);
    if (bucket !== null && job.group !== null && job.kind === "async") {
      op.sum(["group", job.group, bucket], PLUS_ONE);
    }
  }

  async #putText(id: string, text: string): Promise<void> {
    await this.putBlob(id, new TextEncoder().encode(text));
  }

  async #load(job: StoredJob): Promise<JobRecord> {
    const { payloadInBlob, resultInBlob, ...record } = job;
    const text = async (id: string) =>
      new TextDecoder().decode((await this.getBlob(id)) ?? undefined);
    if (payloadInBlob) record.payload = await text(`payload:${job.id}`);
    if (resultInBlob) record.result = await text(`result:${job.id}`);
    return record;
  }
}

/** The job back in its lane, at its place, held by nobody. */
function requeue(op: Deno.AtomicOperation, job: StoredJob): StoredJob {
  op.set(["lane", job.lane!, job.order, job.id], true);
  return { ...job, state: "queued", node: null };
}

/** Counter changes for one atomic, gathered so that each counter gets one sum. */
class CountDeltas {
  readonly #deltas = new Map<string, number>();

  add(counter: string, n: number): void {
    this.#deltas.set(counter, (this.#deltas.get(counter) ?? 0) + n);
  }

  move(from: RecordState | null, to: RecordState): void {
    if (from === to) return;
    if (from !== null && isCounted(from)) this.add(from, -1);
    if (isCounted(to)) this.add(to, 1);
  }

  applyTo(op: Deno.AtomicOperation): void {
    for (const [counter, n] of this.#deltas) {
      if (n !== 0) op.sum(["count", counter], n > 0 ? BigInt(n) : U64_WRAP + BigInt(n));
    }
  }
}

function count(op: Deno.AtomicOperation, from: RecordState | null, to: RecordState): void {
  const counts = new CountDeltas();
  counts.move(from, to);
  counts.applyTo(op);
}

async function commitOrThrow(op: Deno.AtomicOperation): Promise<void> {
  const result = await op.commit();
  if (!result.ok) throw new Error("KV write conflicted with itself (no checks were set)");
}
