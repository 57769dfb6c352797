/**
 * @module
 * The job store on Redis, spoken to over the Upstash REST protocol with `@upstash/redis`
 * (Upstash itself, or SRH in front of a plain Redis). Every state transition is one Lua
 * script, atomic on the server; the REST API has no WATCH. Scripts are written so that a
 * retried request cannot apply a change twice (each checks the state it moves from).
 */
import { Redis } from "@upstash/redis";
import {
  type AsyncOutcome,
  deadResult,
  type DocKind,
  type GroupCounts,
  type JobRecord,
  type JobStore,
  type NewAsyncJob,
  type Recovered,
  type Retention,
  type StoreStats,
  type SyncChange,
  type Versioned,
} from "./contract.ts";

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

// Shared Lua helpers: counters for the states /metrics shows, and the index of final jobs.
const LUA_HELPERS = `
local P = ARGV[1]
local COUNTED = {queued=true, running=true, dead=true, abandoned=true}
local function move(from, to)
  if from and COUNTED[from] then redis.call('HINCRBY', P..'count', from, -1) end
  if COUNTED[to] then redis.call('HINCRBY', P..'count', to, 1) end
end
local function requeue(job)
  job.state = 'queued'
  job.node = cjson.null
  redis.call('ZADD', P..'lane:'..job.lane, job.order, job.id)
end
local function finish(job)
  if job.state == 'dead' then redis.call('ZADD', P..'dead', job.updatedAt, job.id)
  else redis.call('ZADD', P..'finished', job.updatedAt, job.id) end
  if job.kind == 'async' and job.group ~= cjson.null then
    local bucket = 'failed'
    if job.state == 'done' then bucket = 'done' elseif job.state == 'cancelled' then bucket = 'cancelled' end
    redis.call('HINCRBY', P..'group:'..job.group, bucket, 1)
  end
end
`;

/**
 * ARGV: prefix, then (id, node, state, updatedAt, json) per change. The state moved from is
 * read here, not trusted from the caller: a request retried after a lost reply changes
 * nothing twice, and a job already final (abandoned by a recovery) stays final.
 */
const RECORD = LUA_HELPERS + `
for i = 2, #ARGV, 5 do
  local id, node, state = ARGV[i], ARGV[i+1], ARGV[i+2]
  local key = P..'job:'..id
  local cur = redis.call('GET', key)
  local from = nil
  if cur then from = cjson.decode(cur).state end
  if from == nil or from == 'queued' or from == 'running' then
    redis.call('SET', key, ARGV[i+4])
    if from == nil then redis.call('HINCRBY', P..'count', 'total', 1) end
    if from ~= state then move(from, state) end
    if state ~= 'queued' and state ~= 'running' then
      redis.call('HDEL', P..'active', id)
      redis.call('ZADD', P..'finished', ARGV[i+3], id)
    elseif from == nil then
      redis.call('HSET', P..'active', id, node)
    end
  end
end
return 1`;

/** ARGV: prefix, then (id, lane, order, json) per job. */
const ENQUEUE = LUA_HELPERS + `
local n = 0
for i = 2, #ARGV, 4 do
  if redis.call('SET', P..'job:'..ARGV[i], ARGV[i+3], 'NX') then
    redis.call('ZADD', P..'lane:'..ARGV[i+1], ARGV[i+2], ARGV[i])
    n = n + 1
  end
end
redis.call('HINCRBY', P..'count', 'total', n)
redis.call('HINCRBY', P..'count', 'queued', n)
return n`;

/** ARGV: prefix, lane, node, max, now. Returns the claimed jobs as JSON. */
const CLAIM = LUA_HELPERS + `
local claimed = {}
local popped = redis.call('ZPOPMIN', P..'lane:'..ARGV[2], tonumber(ARGV[4]))
for i = 1, #popped, 2 do
  local raw = redis.call('GET', P..'job:'..popped[i])
  if raw then
    local job = cjson.decode(raw)
    if job.state == 'queued' then
      job.state = 'running'
      job.node = ARGV[3]
      job.attempts = job.attempts + 1
      job.updatedAt = tonumber(ARGV[5])
      local out = cjson.encode(job)
      redis.call('SET', P..'job:'..job.id, out)
      redis.call('HSET', P..'active', job.id, ARGV[3])
      move('queued', 'running')
      claimed[#claimed + 1] = out
    end
  end
end
return claimed`;

/** ARGV: prefix, id, node, attempt, outcome, result, now. */
const COMPLETE = LUA_HELPERS + `
local raw = redis.call('GET', P..'job:'..ARGV[2])
if not raw then return 0 end
local job = cjson.decode(raw)
if job.state ~= 'running' or job.node ~= ARGV[3] or job.attempts ~= tonumber(ARGV[4]) then return 0 end
job.state = ARGV[5]
job.result = ARGV[6]
job.updatedAt = tonumber(ARGV[7])
redis.call('SET', P..'job:'..job.id, cjson.encode(job))
redis.call('HDEL', P..'active', job.id)
move('running', job.state)
finish(job)
return 1`;

/** ARGV: prefix, node, now, ids... */
const RELEASE = LUA_HELPERS + `
for i = 4, #ARGV do
  local raw = redis.call('GET', P..'job:'..ARGV[i])
  if raw then
    local job = cjson.decode(raw)
    if job.state == 'running' and job.node == ARGV[2] then
      requeue(job)
      job.attempts = job.attempts - 1
      job.updatedAt = tonumber(ARGV[3])
      redis.call('SET', P..'job:'..job.id, cjson.encode(job))
      redis.call('HDEL', P..'active', job.id)
      move('running', 'queued')
    end
  end
end
return 1`;

/** ARGV: prefix, now, ids... Returns how many were still queued. */
const CANCEL = LUA_HELPERS + `
local n = 0
for i = 3, #ARGV do
  local raw = redis.call('GET', P..'job:'..ARGV[i])
  if raw then
    local job = cjson.decode(raw)
    if job.state == 'queued' and job.kind == 'async' then
      redis.call('ZREM', P..'lane:'..job.lane, job.id)
      job.state = 'cancelled'
      job.updatedAt = tonumber(ARGV[2])
      redis.call('SET', P..'job:'..job.id, cjson.encode(job))
      move('queued', 'cancelled')
      finish(job)
      n = n + 1
    end
  end
end
return n`;

/** ARGV: prefix, now, maxAttempts. Returns {abandoned, requeued, dead}. */
const RECOVER = LUA_HELPERS + `
local now = tonumber(ARGV[2])
local leases = {}
local nodes = redis.call('HGETALL', P..'node')
for i = 1, #nodes, 2 do leases[nodes[i]] = tonumber(nodes[i+1]) end
local out = {0, 0, 0}
local active = redis.call('HGETALL', P..'active')
for i = 1, #active, 2 do
  local id, node = active[i], active[i+1]
  if (leases[node] or 0) <= now then
    redis.call('HDEL', P..'active', id)
    local raw = redis.call('GET', P..'job:'..id)
    if raw then
      local job = cjson.decode(raw)
      if job.node == node and (job.state == 'queued' or job.state == 'running') then
        local from = job.state
        job.updatedAt = now
        if job.kind == 'sync' then
          job.state = 'abandoned'
          finish(job)
          out[1] = out[1] + 1
        elseif job.attempts >= tonumber(ARGV[3]) then
          job.state = 'dead'
          job.result = (ARGV[4]:gsub('ATTEMPTS', tostring(job.attempts)))
          finish(job)
          out[3] = out[3] + 1
        else
          requeue(job)
          out[2] = out[2] + 1
        end
        move(from, job.state)
        redis.call('SET', P..'job:'..id, cjson.encode(job))
      end
    end
  end
end
for node, untilMs in pairs(leases) do
  if untilMs <= now then redis.call('HDEL', P..'node', node) end
end
return out`;

/** ARGV: prefix, finishedBefore, deadBefore. Deletes at most 1000 records a call. */
const PURGE = LUA_HELPERS + `
local n = 0
for _, index in ipairs({'finished', 'dead'}) do
  local before = (index == 'finished') and ARGV[2] or ARGV[3]
  local ids = redis.call('ZRANGEBYSCORE', P..index, '-inf', '(' .. before, 'LIMIT', 0, 1000)
  for _, id in ipairs(ids) do
    redis.call('DEL', P..'job:'..id)
    redis.call('ZREM', P..index, id)
    if index == 'dead' then redis.call('HINCRBY', P..'count', 'dead', -1) end
    n = n + 1
  end
end
return n`;

/** ARGV: prefix, kind, id, json, createdAt. */
const CREATE_DOC = `
local P = ARGV[1]
local key = P..'doc:'..ARGV[2]..':'..ARGV[3]
if redis.call('HSETNX', key, 'd', ARGV[4]) == 0 then return 0 end
redis.call('HSET', key, 'v', 1)
redis.call('ZADD', P..'docs:'..ARGV[2], ARGV[5], ARGV[3])
return 1`;

/** ARGV: prefix, kind, id, version, json. */
const REPLACE_DOC = `
local key = ARGV[1]..'doc:'..ARGV[2]..':'..ARGV[3]
if redis.call('HGET', key, 'v') ~= ARGV[4] then return 0 end
redis.call('HSET', key, 'd', ARGV[5])
redis.call('HINCRBY', key, 'v', 1)
return 1`;

type Script = ReturnType<Redis["createScript"]>;
type ScriptName =
  | "record"
  | "enqueue"
  | "claim"
  | "complete"
  | "release"
  | "cancel"
  | "recover"
  | "purge"
  | "createDoc"
  | "replaceDoc";

export class RedisJobStore implements JobStore {
  readonly name = "redis";
  readonly #redis: Redis;
  readonly #p: string;
  readonly #scripts: Record<ScriptName, Script>;

  constructor(options: RedisStoreOptions) {
    const timeoutMs = options.timeoutMs ?? 5000;
    this.#redis = new Redis({
      url: options.url,
      token: options.token,
      // Raw strings back: job JSON is parsed here, not guessed at by the client.
      automaticDeserialization: false,
      // Predictable one-request-per-call behaviour; transitions are scripts anyway.
      enableAutoPipelining: false,
      enableTelemetry: false,
      readYourWrites: false,
      // Fail fast to a 503 instead of retrying for seconds while a client waits.
      retry: { retries: 1, backoff: () => 50 },
      signal: () => AbortSignal.timeout(timeoutMs),
    });
    this.#p = options.prefix ?? "lqp:";
    const script = (src: string) => this.#redis.createScript(src);
    this.#scripts = {
      record: script(RECORD),
      enqueue: script(ENQUEUE),
      claim: script(CLAIM),
      complete: script(COMPLETE),
      release: script(RELEASE),
      cancel: script(CANCEL),
      recover: script(RECOVER),
      purge: script(PURGE),
      createDoc: script(CREATE_DOC),
      replaceDoc: script(REPLACE_DOC),
    };
  }

  async ping(): Promise<void> {
    await this.#redis.ping();
  }

  /** A hash's fields; without automatic deserialization the client hands back [k, v, ...]. */
  async #hash(key: string): Promise<Record<string, string>> {
    const reply: unknown = await this.#redis.hgetall(key);
    if (!Array.isArray(reply)) return {};
    const fields: Record<string, string> = {};
    for (let i = 0; i + 1 < reply.length; i += 2) fields[String(reply[i])] = String(reply[i + 1]);
    return fields;
  }

  /** Runs one of the scripts; the reply's shape is the script's own (see its comment). */
  async #eval<T = unknown>(name: ScriptName, args: string[]): Promise<T> {
    return await this.#scripts[name].exec([], args) as T;
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
    const claimed = await this.#eval<string[]>("claim", [
      this.#p,
      lane,
      node,
      String(max),
      String(now),
    ]);
    return claimed.map((raw) => parseJob(raw));
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
    const done = await this.#eval<number>("complete", [
      this.#p,
      id,
      node,
      String(attempt),
      outcome,
      result,
      String(now),
    ]);
    return done === 1;
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
    const [abandoned, requeued, dead] = await this.#eval<number[]>("recover", [
      this.#p,
      String(now),
      String(maxAttempts),
      template,
    ]);
    return { abandoned, requeued, dead };
  }

  async get(id: string): Promise<JobRecord | null> {
    const raw = await this.#redis.get<string>(`${this.#p}job:${id}`);
    return raw === null ? null : parseJob(raw);
  }

  async getMany(ids: readonly string[]): Promise<(JobRecord | null)[]> {
    const records: (JobRecord | null)[] = [];
    for (let i = 0; i < ids.length; i += 200) {
      const keys = ids.slice(i, i + 200).map((id) => `${this.#p}job:${id}`);
      const raws = await this.#redis.mget<(string | null)[]>(...keys);
      records.push(...raws.map((raw) => raw === null ? null : parseJob(raw)));
    }
    return records;
  }

  async cancelQueued(ids: readonly string[], now: number): Promise<number> {
    let cancelled = 0;
    for (let i = 0; i < ids.length; i += 500) {
      const slice = ids.slice(i, i + 500);
      cancelled += await this.#eval<number>("cancel", [this.#p, String(now), ...slice]);
    }
    return cancelled;
  }

  async stats(): Promise<StoreStats> {
    const counts = await this.#hash(`${this.#p}count`);
    const n = (key: string) => Number(counts[key] ?? 0);
    return {
      queued: n("queued"),
      running: n("running"),
      dead: n("dead"),
      abandoned: n("abandoned"),
      total: n("total"),
    };
  }

  async groupCounts(group: string): Promise<GroupCounts> {
    const counts = await this.#hash(`${this.#p}group:${group}`);
    const n = (key: string) => Number(counts[key] ?? 0);
    return { done: n("done"), failed: n("failed"), cancelled: n("cancelled") };
  }

  async deadLetters(limit: number): Promise<JobRecord[]> {
    const ids = await this.#redis.zrange<string[]>(`${this.#p}dead`, 0, limit - 1, { rev: true });
    const jobs = await Promise.all(ids.map((id) => this.get(id)));
    return jobs.filter((job) => job !== null);
  }

  async purge(now: number, retention: Retention): Promise<number> {
    let total = 0;
    while (true) {
      const purged = await this.#eval<number>("purge", [
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
    const chunks = await this.#redis.lrange<string>(`${this.#p}blob:${id}`, 0, -1);
    if (chunks.length === 0) return null;
    return Uint8Array.fromBase64(chunks.join(""));
  }

  async deleteBlob(id: string): Promise<void> {
    await this.#redis.del(`${this.#p}blob:${id}`);
  }

  async createDoc<T>(kind: DocKind, id: string, value: T, createdAt: number): Promise<boolean> {
    const created = await this.#eval<number>("createDoc", [
      this.#p,
      kind,
      id,
      JSON.stringify(value),
      String(createdAt),
    ]);
    return created === 1;
  }

  async getDoc<T>(kind: DocKind, id: string): Promise<Versioned<T> | null> {
    const doc = await this.#hash(`${this.#p}doc:${kind}:${id}`);
    if (doc.d === undefined) return null;
    return { value: JSON.parse(doc.d) as T, version: String(doc.v) };
  }

  async replaceDoc<T>(kind: DocKind, id: string, version: string, value: T): Promise<boolean> {
    const replaced = await this.#eval<number>("replaceDoc", [
      this.#p,
      kind,
      id,
      version,
      JSON.stringify(value),
    ]);
    return replaced === 1;
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
    const ids = await this.#redis.zrange<string[]>(index, start, start + limit - 1, { rev: true });
    const docs = await Promise.all(ids.map((id) => this.getDoc<T>(kind, id)));
    return docs.filter((doc) => doc !== null).map((doc) => doc.value);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

function parseJob(raw: string): JobRecord {
  return JSON.parse(raw) as JobRecord;
}
