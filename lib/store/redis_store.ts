/**
 * @module
 * The job store on Redis, spoken to over the Upstash REST protocol with `@upstash/redis`
 * (Upstash itself, or SRH in front of a plain Redis). Every state transition is one Lua
 * script (lib/store/redis_scripts.ts); what comes back is checked before it is used
 * (lib/store/redis_replies.ts).
 */
import type { Redis } from "@upstash/redis";
import { upstashClient } from "./upstash_client.ts";
import { z } from "zod";
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
import { checked, Counters, HashFields, JobJson } from "./redis_replies.ts";
import { type ScriptName, type ScriptReply, SCRIPTS } from "./redis_scripts.ts";

export interface RedisStoreOptions {
  url: string;
  token: string;
  /** Key prefix, so several proxies (or tests) can share one Redis. */
  prefix?: string;
  /** Per-request timeout: a store that does not answer counts as unreachable. */
  timeoutMs?: number;
}

/** Base64 text is kept in list items of at most this many characters. */
const BLOB_CHUNK_CHARS = 1024 * 1024;

type Script = ReturnType<Redis["createScript"]>;

const JobJsonOrNone = JobJson.nullable();
const Strings = z.array(z.string());
const Items = z.array(z.unknown());

export class RedisJobStore implements JobStore {
  readonly name = "redis";
  readonly #redis: Redis;
  readonly #p: string;
  readonly #scripts = new Map<ScriptName, Script>();

  constructor(options: RedisStoreOptions) {
    const timeoutMs = options.timeoutMs ?? 5000;
    this.#redis = upstashClient({
      url: options.url,
      token: options.token,
      timeoutMs,
      retries: 1,
    });
    this.#p = options.prefix ?? "lqp:";
  }

  async ping(): Promise<void> {
    await this.#redis.ping();
  }

  #hash(key: string): Promise<Map<string, string>> {
    return this.#hgetall(key, HashFields);
  }

  #counters(key: string): Promise<Map<string, number>> {
    return this.#hgetall(key, Counters);
  }

  async #hgetall<T>(key: string, shape: z.ZodType<T>): Promise<T> {
    const reply: unknown = await this.#redis.hgetall(key);
    return checked(shape, reply, `HGETALL ${key}`);
  }

  /** Runs one of the scripts and checks that its reply has the script's shape. */
  async #eval<N extends ScriptName>(name: N, args: string[]): Promise<ScriptReply<N>> {
    let script = this.#scripts.get(name);
    if (script === undefined) {
      script = this.#redis.createScript(SCRIPTS[name].lua);
      this.#scripts.set(name, script);
    }
    const reply: unknown = await script.exec([], args);
    return checked(SCRIPTS[name].reply, reply, `script ${name}`);
  }

  async record(changes: readonly SyncChange[]): Promise<void> {
    if (changes.length === 0) return;
    const args = changes.flatMap(({ job }) => [
      job.id,
      job.node ?? "",
      job.state,
      String(job.updatedAt),
      JSON.stringify(job),
    ]);
    await this.#eval("record", [this.#p, ...args]);
  }

  async enqueue(jobs: readonly NewAsyncJob[], now: number): Promise<void> {
    // Bounded requests: a 50,000-line batch is not one multi-megabyte script call.
    for (let i = 0; i < jobs.length; i += 500) {
      const args = jobs.slice(i, i + 500).flatMap((init) => {
        const job: JobRecord = {
          ...init,
          kind: "async",
          state: "queued",
          attempts: 0,
          node: null,
          createdAt: now,
          updatedAt: now,
          result: null,
        };
        return [init.id, init.lane, String(init.order), JSON.stringify(job)];
      });
      await this.#eval("enqueue", [this.#p, ...args]);
    }
  }

  async claim(lane: string, node: string, max: number, now: number): Promise<JobRecord[]> {
    return await this.#eval("claim", [this.#p, lane, node, String(max), String(now)]);
  }

  async laneSize(lane: string): Promise<number> {
    return await this.#redis.zcard(`${this.#p}lane:${lane}`);
  }

  async complete(
    id: string,
    node: string,
    attempt: number,
    outcome: AsyncOutcome,
    result: string,
    now: number,
  ): Promise<boolean> {
    return await this.#eval("complete", [
      this.#p,
      id,
      node,
      String(attempt),
      outcome,
      result,
      String(now),
    ]);
  }

  async release(ids: readonly string[], node: string, now: number): Promise<void> {
    if (ids.length === 0) return;
    await this.#eval("release", [this.#p, node, String(now), ...ids]);
  }

  async heartbeat(node: string, leaseMs: number, now: number): Promise<void> {
    await this.#redis.hset(`${this.#p}node`, { [node]: now + leaseMs });
  }

  async recover(now: number, maxAttempts: number): Promise<Recovered> {
    const template = deadResult("ATTEMPTS");
    return await this.#eval("recover", [this.#p, String(now), String(maxAttempts), template]);
  }

  async get(id: string): Promise<JobRecord | null> {
    const key = `${this.#p}job:${id}`;
    const raw: unknown = await this.#redis.get(key);
    return checked(JobJsonOrNone, raw, `GET ${key}`);
  }

  async getMany(ids: readonly string[]): Promise<(JobRecord | null)[]> {
    const records: (JobRecord | null)[] = [];
    for (let i = 0; i < ids.length; i += 200) {
      const keys = ids.slice(i, i + 200).map((id) => `${this.#p}job:${id}`);
      const raws = checked(Items, await this.#redis.mget(...keys), `MGET ${keys.length} jobs`);
      if (raws.length !== keys.length) {
        throw new Error(`Redis answered MGET of ${keys.length} jobs with ${raws.length} values`);
      }
      records.push(...raws.map((raw, j) => checked(JobJsonOrNone, raw, `MGET ${keys[j]}`)));
    }
    return records;
  }

  async cancelQueued(ids: readonly string[], now: number): Promise<number> {
    let cancelled = 0;
    for (let i = 0; i < ids.length; i += 500) {
      const slice = ids.slice(i, i + 500);
      cancelled += await this.#eval("cancel", [this.#p, String(now), ...slice]);
    }
    return cancelled;
  }

  async stats(): Promise<StoreStats> {
    return statsOf(await this.#counters(`${this.#p}count`));
  }

  async groupCounts(group: string): Promise<GroupCounts> {
    return groupCountsOf(await this.#counters(`${this.#p}group:${group}`));
  }

  async deadLetters(limit: number): Promise<JobRecord[]> {
    const key = `${this.#p}dead`;
    const ids = checked(Strings, await this.#redis.zrange(key, 0, limit - 1, { rev: true }), key);
    const jobs = await Promise.all(ids.map((id) => this.get(id)));
    return jobs.filter((job) => job !== null);
  }

  async purge(now: number, retention: Retention): Promise<number> {
    let total = 0;
    while (true) {
      const purged = await this.#eval("purge", [
        this.#p,
        String(now - retention.finishedMs),
        String(now - retention.deadMs),
      ]);
      total += purged;
      if (purged < 1000) return total;
    }
  }

  async putBlob(id: string, bytes: Uint8Array): Promise<void> {
    const key = `${this.#p}blob:${id}`;
    const text = bytes.toBase64();
    const chunks: string[] = [];
    for (let i = 0; i < text.length; i += BLOB_CHUNK_CHARS) {
      chunks.push(text.slice(i, i + BLOB_CHUNK_CHARS));
    }
    // Built under a temporary key and renamed: readers see the old blob or the whole new one.
    const building = `${key}:building:${crypto.randomUUID()}`;
    for (const chunk of chunks) await this.#redis.rpush(building, chunk);
    if (chunks.length === 0) await this.#redis.rpush(building, "");
    await this.#redis.rename(building, key);
  }

  async getBlob(id: string): Promise<Uint8Array | null> {
    const key = `${this.#p}blob:${id}`;
    const chunks = checked(Strings, await this.#redis.lrange(key, 0, -1), `LRANGE ${key}`);
    if (chunks.length === 0) return null;
    return Uint8Array.fromBase64(chunks.join(""));
  }

  async deleteBlob(id: string): Promise<void> {
    await this.#redis.del(`${this.#p}blob:${id}`);
  }

  async createDoc<T>(kind: DocKind, id: string, value: T, createdAt: number): Promise<boolean> {
    return await this.#eval("createDoc", [
      this.#p,
      kind,
      id,
      JSON.stringify(value),
      String(createdAt),
    ]);
  }

  async getDoc<T>(kind: DocKind, id: string): Promise<Versioned<T> | null> {
    const doc = await this.#hash(`${this.#p}doc:${kind}:${id}`);
    const text = doc.get("d");
    const version = doc.get("v");
    if (text === undefined) return null;
    if (version === undefined) throw new Error(`Document ${kind} ${id} in Redis has no version`);
    return { value: JSON.parse(text) as T, version };
  }

  async replaceDoc<T>(kind: DocKind, id: string, version: string, value: T): Promise<boolean> {
    return await this.#eval("replaceDoc", [this.#p, kind, id, version, JSON.stringify(value)]);
  }

  async deleteDoc(kind: DocKind, id: string): Promise<void> {
    await this.#redis.del(`${this.#p}doc:${kind}:${id}`);
    await this.#redis.zrem(`${this.#p}docs:${kind}`, id);
  }

  async listDocs<T>(kind: DocKind, limit: number, after?: string): Promise<T[]> {
    const index = `${this.#p}docs:${kind}`;
    let start = 0;
    if (after !== undefined) {
      const rank = await this.#redis.zrevrank(index, after);
      if (rank === null) return [];
      start = rank + 1;
    }
    const range = await this.#redis.zrange(index, start, start + limit - 1, { rev: true });
    const ids = checked(Strings, range, `ZRANGE ${index}`);
    const docs = await Promise.all(ids.map((id) => this.getDoc<T>(kind, id)));
    return docs.filter((doc) => doc !== null).map((doc) => doc.value);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
