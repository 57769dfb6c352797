import assert from "node:assert/strict";
import { newRequestId } from "../lib/request_id.ts";
import {
  briefEntries,
  type BriefEntry,
  briefRecords,
  findBrief,
  splitBrief,
} from "../lib/store/brief_jobs.ts";
import type { JobRecord, SyncChange } from "../lib/store/contract.ts";

const ARRIVED = Date.UTC(2026, 11, 3);

function syncJob(id: string, at: number, extra: Partial<JobRecord> = {}): JobRecord {
  return {
    id,
    kind: "sync",
    model: "a",
    priority: "interactive",
    state: "done",
    attempts: 1,
    node: "n1",
    lane: null,
    order: 0,
    group: null,
    createdAt: at,
    updatedAt: at + 3,
    payload: null,
    result: null,
    ...extra,
  };
}

/** Entries as KV lists them: by time, then by first id. */
function listed(entries: BriefEntry[]) {
  const sorted = [...entries].sort((a, b) =>
    a.key[1] - b.key[1] || (a.key[2] < b.key[2] ? -1 : a.key[2] > b.key[2] ? 1 : 0)
  );
  const read: string[] = [];
  const list = async function* (start: number) {
    for (const entry of sorted) {
      if (entry.key[1] < start) continue;
      read.push(entry.key[2]);
      yield { key: entry.key, value: entry.text, versionstamp: "0" };
    }
  };
  return { list, read };
}

Deno.test("briefEntries(): a write's jobs go to entries under 24,000 characters, in id order, under the write's newest time", () => {
  const model = "m".repeat(300); // long names make a write take several entries
  const jobs = Array.from(
    { length: 1000 },
    (_, i) => syncJob(newRequestId(ARRIVED + (i % 7)), ARRIVED + (i % 7), { model }),
  );
  const entries = briefEntries(jobs);
  assert.ok(entries.length > 1, `${entries.length} entries`);
  for (const entry of entries) {
    assert.ok(entry.text.length <= 24_000, `${entry.text.length} characters`);
    assert.equal(entry.key[1], ARRIVED + 6 + 3, "the newest change of the write");
    assert.equal(entry.size, briefRecords(entry.text).length);
  }
  const firsts = entries.map((entry) => entry.key[2]);
  assert.deepEqual(firsts, [...firsts].sort());
  const byId = (a: JobRecord, b: JobRecord) => (a.id < b.id ? -1 : 1);
  assert.deepEqual(entries.flatMap((entry) => briefRecords(entry.text)), jobs.sort(byId));
});

Deno.test("findBrief(): a record is found in a later entry of its write and beside the next write's jobs of the same millisecond; a search for one never written stops at the first write a second later", async () => {
  const model = "m".repeat(300);
  const first = Array.from(
    { length: 300 },
    (_, i) => syncJob(newRequestId(ARRIVED + (i % 3)), ARRIVED, { model }),
  );
  // The next write began in the millisecond the first one's last jobs arrived in.
  const second = Array.from(
    { length: 300 },
    (_, i) => syncJob(newRequestId(ARRIVED + 2 + (i % 3)), ARRIVED + 2 + (i % 3), { model }),
  );
  const later = Array.from(
    { length: 20 },
    (_, w) => briefEntries([syncJob(newRequestId(ARRIVED + 2000 + w), ARRIVED + 2000 + w)]),
  ).flat();
  const { list, read } = listed([...briefEntries(first), ...briefEntries(second), ...later]);
  for (const job of [...first, ...second]) {
    assert.deepEqual(await findBrief(job.id, list), job);
  }
  read.length = 0;
  assert.equal(await findBrief(newRequestId(ARRIVED + 1), list), null);
  // It reads on to the first entry of a write whose jobs all arrived a second later, no further.
  assert.equal(read.at(-1), later[0].key[2]);
  assert.equal(read.filter((id) => id >= later[0].key[2]).length, 1);
  assert.equal(await findBrief("req_fc71ed15f4414ecd", list), null, "an id without a time");
});

/** Which of `jobs`, all new in one write, splitBrief() keeps brief. */
function briefOf(changes: SyncChange[]): JobRecord[] {
  const { brief, single } = splitBrief(changes);
  assert.equal(brief.length + single.length, changes.length);
  return brief;
}

Deno.test("splitBrief(): only new sync jobs that finished uncounted, with an id whose time is no later than their last change, and not a retry", () => {
  const id = newRequestId(ARRIVED);
  const alone = (job: JobRecord, change: Partial<SyncChange> = {}) =>
    briefOf([{ job, from: null, ...change }]).length === 1;
  assert.ok(alone(syncJob(id, ARRIVED)));
  for (const state of ["failed", "cancelled"] as const) {
    assert.ok(alone(syncJob(id, ARRIVED, { state })), state);
  }
  // Counted or open states keep their own record and indexes.
  for (const state of ["queued", "running", "dead", "abandoned"] as const) {
    assert.ok(!alone(syncJob(id, ARRIVED, { state })), state);
  }
  assert.ok(!alone(syncJob(id, ARRIVED), { from: "running" }), "written before");
  assert.ok(!alone(syncJob(id, ARRIVED), { retried: true }), "part of a failed write may be in");
  assert.ok(!alone(syncJob("req_fc71ed15f4414ecd", ARRIVED)), "an id without a time");
  assert.ok(!alone(syncJob(id, ARRIVED - 10, { updatedAt: ARRIVED - 1 })), "a clock behind");
  assert.ok(!alone(syncJob(id, ARRIVED, { kind: "async" })));
});

Deno.test("a write that spans an outage keeps the jobs that arrived over a second before its newest change apart, and every brief one is found after the clock steps back", async () => {
  const early = syncJob(newRequestId(ARRIVED), ARRIVED, { updatedAt: ARRIVED + 50 });
  const late = syncJob(newRequestId(ARRIVED + 29_990), ARRIVED + 29_990);
  const brief = briefOf([early, late].map((job) => ({ job, from: null })));
  assert.deepEqual(brief, [late]);
  // The clock stepped back 10 s: the next write's job seems to have arrived before `late`.
  const next = syncJob(newRequestId(ARRIVED + 20_000), ARRIVED + 20_000);
  const { list } = listed([...briefEntries(brief), ...briefEntries([next])]);
  assert.deepEqual(await findBrief(late.id, list), late);
  assert.deepEqual(await findBrief(next.id, list), next);
});
