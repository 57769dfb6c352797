/**
 * @module
 * The Lua scripts of the Redis store, one per state transition (atomic on the server: the REST
 * API has no WATCH), each with the shape of its reply. Scripts check the state they move from,
 * so a request retried after a lost reply cannot apply a change twice. The state rules are not
 * written here: the tables the scripts consult (OPEN, COUNTED, GROUP_BUCKET) are generated
 * from lib/store/record_states.ts.
 */
import { z } from "zod";
import { COUNTED_STATES, groupBucket, OPEN_STATES, RECORD_STATES } from "./record_states.ts";
import { Count, Flag, JobJson, Ran } from "./redis_replies.ts";

/** A Lua string literal. State and bucket names are plain words; anything else is a mistake. */
function luaWord(word: string): string {
  if (!/^[a-z]+$/.test(word)) throw new Error(`Not a plain word, kept out of Lua: ${word}`);
  return `'${word}'`;
}

/** A Lua table literal from `[key, value]` pairs, both plain words; `true` makes it a set. */
function luaTable(pairs: readonly (readonly [string, string | true])[]): string {
  const items = pairs.map(([key, value]) =>
    `[${luaWord(key)}]=${value === true ? "true" : luaWord(value)}`
  );
  return `{${items.join(", ")}}`;
}

const GROUP_BUCKET_OF_FINAL = RECORD_STATES.flatMap((state) => {
  const bucket = groupBucket(state);
  return bucket === null ? [] : [[state, bucket] as const];
});

/** The state rules as the Lua tables the scripts consult. */
const STATE_RULES = [
  `local OPEN = ${luaTable(OPEN_STATES.map((state) => [state, true]))}`,
  `local COUNTED = ${luaTable(COUNTED_STATES.map((state) => [state, true]))}`,
  `local GROUP_BUCKET = ${luaTable(GROUP_BUCKET_OF_FINAL)}`,
].join("\n");

/**
 * Shared by the job scripts: the prefix, the state rules, the live counters, a job's return
 * to its lane, and the indexes and batch counts of final jobs.
 */
const LUA_HELPERS = `
local P = ARGV[1]
${STATE_RULES}
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
    redis.call('HINCRBY', P..'group:'..job.group, GROUP_BUCKET[job.state], 1)
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
  if from == nil or OPEN[from] then
    redis.call('SET', key, ARGV[i+4])
    if from == nil then redis.call('HINCRBY', P..'count', 'total', 1) end
    if from ~= state then move(from, state) end
    if not OPEN[state] then
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
      if job.node == node and OPEN[job.state] then
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

const SCRIPT_LIST = {
  record: { lua: RECORD, reply: Ran },
  enqueue: { lua: ENQUEUE, reply: Count },
  claim: { lua: CLAIM, reply: z.array(JobJson) },
  complete: { lua: COMPLETE, reply: Flag },
  release: { lua: RELEASE, reply: Ran },
  cancel: { lua: CANCEL, reply: Count },
  recover: {
    lua: RECOVER,
    reply: z.tuple([Count, Count, Count]).transform(([abandoned, requeued, dead]) => ({
      abandoned,
      requeued,
      dead,
    })),
  },
  purge: { lua: PURGE, reply: Count },
  createDoc: { lua: CREATE_DOC, reply: Flag },
  replaceDoc: { lua: REPLACE_DOC, reply: Flag },
} as const satisfies Record<string, { lua: string; reply: z.ZodType }>;

export type ScriptName = keyof typeof SCRIPT_LIST;
export type ScriptReply<N extends ScriptName> = z.output<(typeof SCRIPT_LIST)[N]["reply"]>;

/**
 * Every script and the shape of its reply, typed per name so that a caller generic in the
 * name gets that script's reply type.
 */
export const SCRIPTS: { [N in ScriptName]: { lua: string; reply: z.ZodType<ScriptReply<N>> } } =
  SCRIPT_LIST;
