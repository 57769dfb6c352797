/**
 * The Redis scripts' state rules are the TypeScript ones (the Lua tables are generated, and
 * every state the Lua names exists), and a reply of the wrong shape is refused with a message
 * that says what was read. No Redis: the scripts are read as text, the replies are made up.
 */
import assert from "node:assert/strict";
import {
  COUNTED_STATES,
  groupBucket,
  isFinal,
  OPEN_STATES,
  RECORD_STATES,
  type RecordState,
} from "../lib/store/record_states.ts";
import { checked, MalformedReplyError } from "../lib/store/redis_replies.ts";
import { SCRIPTS } from "../lib/store/redis_scripts.ts";
import type { JobRecord } from "../lib/store/contract.ts";

const RULE_TABLES = ["OPEN", "COUNTED", "GROUP_BUCKET"] as const;

/** The `local NAME = {...}` table in `lua` as key → value (`true` for a set), or null. */
function luaTable(lua: string, name: string): Map<string, string> | null {
  const found = lua.match(new RegExp(`local ${name} = \\{([^}]*)\\}`));
  if (found === null) return null;
  const entries = found[1].split(", ").map((item) => {
    const entry = item.match(/^\['(\w+)'\]=(?:true|'(\w+)')$/);
    assert.ok(entry !== null, `unexpected item in ${name}: ${item}`);
    return [entry[1], entry[2] ?? "true"] as const;
  });
  return new Map(entries);
}

const asSet = (states: readonly RecordState[]) => new Map(states.map((s) => [s, "true"]));

Deno.test("the rule tables in every script that consults them are the TypeScript constants", () => {
  const finalBuckets = new Map(
    RECORD_STATES.filter(isFinal).map((state) => [state, groupBucket(state)]),
  );
  const expected = {
    OPEN: asSet(OPEN_STATES),
    COUNTED: asSet(COUNTED_STATES),
    GROUP_BUCKET: finalBuckets,
  };
  const consulted = new Set<string>();
  for (const [name, { lua }] of Object.entries(SCRIPTS)) {
    for (const table of RULE_TABLES) {
      if (!lua.includes(`${table}[`)) continue;
      consulted.add(table);
      assert.deepEqual(luaTable(lua, table), expected[table], `${table} in script ${name}`);
    }
  }
  assert.deepEqual([...consulted].sort(), [...RULE_TABLES].sort());
});

Deno.test("every state the scripts compare, set or count is a record state", () => {
  const named = new Set<string>();
  const patterns = [
    /(?:state|from|to)\s*[=~]=\s*'(\w+)'/g,
    /\.state\s*=\s*'(\w+)'/g,
    /move\('(\w+)', '(\w+)'\)/g,
  ];
  for (const { lua } of Object.values(SCRIPTS)) {
    for (const pattern of patterns) {
      for (const match of lua.matchAll(pattern)) {
        for (const state of match.slice(1)) named.add(state);
      }
    }
  }
  const known = new Set<string>(RECORD_STATES);
  assert.deepEqual([...named].filter((state) => !known.has(state)), []);
  // The patterns found the states the transitions are written with.
  for (const state of ["queued", "running", "cancelled", "abandoned", "dead"]) {
    assert.ok(named.has(state), `${state} not seen in the scripts`);
  }
});

const job: JobRecord = {
  id: "j1",
  kind: "async",
  model: "a",
  priority: "batch",
  state: "running",
  attempts: 1,
  node: "n1",
  lane: "a",
  order: 3,
  group: "g",
  createdAt: 1,
  updatedAt: 2,
  payload: "{}",
  result: null,
};

Deno.test("claimed jobs come back as records, and a malformed one names what was off", () => {
  const claim = SCRIPTS.claim.reply;
  assert.deepEqual(checked(claim, [JSON.stringify(job)], "script claim"), [job]);
  const broken = [
    JSON.stringify({ ...job, state: "lost" }),
    JSON.stringify({ ...job, attempts: "1" }),
    JSON.stringify({ id: "j1" }),
    "{not json",
  ];
  for (const raw of broken) {
    assert.throws(() => checked(claim, [raw], "script claim"), (err) => {
      assert.ok(err instanceof MalformedReplyError);
      assert.match(err.message, /^Redis answered script claim with an unexpected shape: /);
      return true;
    });
  }
  assert.throws(
    () => checked(claim, [JSON.stringify({ ...job, state: "lost" })], "script claim"),
    /state/,
  );
  assert.throws(() => checked(claim, ["{not json"], "script claim"), /not JSON/);
});

Deno.test("script replies: flags, counts and recoveries take only their own shapes", () => {
  assert.equal(checked(SCRIPTS.complete.reply, 1, "script complete"), true);
  assert.equal(checked(SCRIPTS.complete.reply, 0, "script complete"), false);
  assert.throws(() => checked(SCRIPTS.complete.reply, 2, "script complete"), MalformedReplyError);
  assert.throws(() => checked(SCRIPTS.complete.reply, "1", "script complete"), MalformedReplyError);
  assert.equal(checked(SCRIPTS.cancel.reply, 4, "script cancel"), 4);
  assert.throws(() => checked(SCRIPTS.cancel.reply, -1, "script cancel"), MalformedReplyError);
  assert.deepEqual(checked(SCRIPTS.recover.reply, [1, 2, 3], "script recover"), {
    abandoned: 1,
    requeued: 2,
    dead: 3,
  });
  assert.throws(
    () => checked(SCRIPTS.recover.reply, [1, 2], "script recover"),
    MalformedReplyError,
  );
});
