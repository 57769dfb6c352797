/**
 * One contract, two real stores: every case runs against Deno KV on a temp file and against
 * a real redis-server behind the Upstash-REST gateway. Time is passed in, never slept.
 */
import assert from "node:assert/strict";
import type { JobRecord, JobStore, SyncChange } from "../lib/store/contract.ts";
import { newRequestId } from "../lib/request_id.ts";
import { STORE_KINDS, withStore } from "./support/stores.ts";
import { asyncJobs, syncJob } from "./support/store_records.ts";

const LEASE = 1000;

async function drain(store: JobStore, node: string, now: number): Promise<JobRecord[]> {
  const all: JobRecord[] = [];
  while (true) {
    const got = await store.claim("a", node, 3, now);
    if (got.length === 0) return all;
    all.push(...got);
  }
}

for (const kind of STORE_KINDS) {
  Deno.test(`${kind} store: sync jobs are recorded through their states and counted`, async () => {
    await withStore(kind, async (store) => {
      await store.heartbeat("n1", LEASE, 0);
      const changes: SyncChange[] = [
        { job: syncJob("s1", "n1", "queued", 1), from: null },
        { job: syncJob("s2", "n1", "queued", 1), from: null },
      ];
      await store.record(changes);
      assert.deepEqual(await store.stats(), {
        queued: 2,
        running: 0,
        dead: 0,
        abandoned: 0,
        total: 2,
      });
      await store.record([{ job: syncJob("s1", "n1", "running", 2), from: "queued" }]);
      assert.deepEqual((await store.stats()).running, 1);
      await store.record([
        { job: syncJob("s1", "n1", "done", 3), from: "running" },
        { job: syncJob("s2", "n1", "cancelled", 3), from: "queued" },
      ]);
      assert.deepEqual(await store.stats(), {
        queued: 0,
        running: 0,
        dead: 0,
        abandoned: 0,
        total: 2,
      });
      assert.deepEqual((await store.get("s1"))?.state, "done");
      // Finished jobs are not active: a later lease expiry does not touch them.
      assert.deepEqual(await store.recover(10 * LEASE, 3), { abandoned: 0, requeued: 0, dead: 0 });
    });
  });

  Deno.test(`${kind} store: sync jobs that arrive and finish within one write are found by id, counted, and expire after retention`, async () => {
    await withStore(kind, async (store) => {
      await store.heartbeat("n1", LEASE, 0);
      const arrived = Date.UTC(2026, 11, 3);
      // Real request ids (they carry their arrival time), some within the same millisecond.
      const ids = Array.from({ length: 150 }, (_, i) => newRequestId(arrived + (i >> 2)));
      const finished = (id: string, i: number): JobRecord => ({
        ...syncJob(id, "n1", (["done", "failed", "cancelled"] as const)[i % 3], arrived + 200),
        createdAt: arrived + (i >> 2),
      });
      await store.record(ids.map((id, i) => ({ job: finished(id, i), from: null })));
      // The next write's jobs arrived after this one began, as the journal's do.
      const next = newRequestId(arrived + 300);
      await store.record([{ job: finished(next, 0), from: null }]);
      assert.deepEqual(await store.stats(), {
        queued: 0,
        running: 0,
        dead: 0,
        abandoned: 0,
        total: 151,
      });
      for (const [i, id] of [...ids.entries()].filter(([i]) => i % 7 === 0)) {
        assert.deepEqual(await store.get(id), finished(id, i), `record ${i}`);
      }
      assert.deepEqual(await store.get(next), finished(next, 0));
      assert.deepEqual(
        (await store.getMany([ids[3], next, newRequestId(arrived + 5)])).map((job) => job?.id),
        [ids[3], next, undefined],
      );
      assert.deepEqual(await store.get(newRequestId(arrived + 2)), null, "an id never recorded");
      const retention = { finishedMs: 1000, deadMs: 1000 };
      assert.deepEqual(await store.purge(arrived + 1000, retention), 0);
      assert.deepEqual(await store.purge(arrived + 1250, retention), 151);
      assert.deepEqual(await store.get(ids[0]), null);
      assert.deepEqual((await store.stats()).total, 151, "the total counts every job ever");
      assert.deepEqual(await store.recover(arrived + 10 * LEASE, 3), {
        abandoned: 0,
        requeued: 0,
        dead: 0,
      });
    });
  });

  Deno.test(`${kind} store: a write sent again after part of it landed counts every job once and leaves no finished job active`, async () => {
    await withStore(kind, async (store) => {
      await store.heartbeat("n1", LEASE, 0);
      const arrived = Date.UTC(2026, 11, 3);
      const [started, brief, unseen, unseenDone, stillRunning] = Array.from(
        { length: 5 },
        (_, i) => newRequestId(arrived + i),
      );
      const job = (id: string, state: JobRecord["state"], at: number): JobRecord => ({
        ...syncJob(id, "n1", state, at),
        createdAt: arrived,
      });
      // What of the failed write landed before it failed (on KV: its first atomic).
      await store.record([
        { job: job(started, "running", arrived + 10), from: null },
        { job: job(brief, "done", arrived + 10), from: null },
        { job: job(stillRunning, "running", arrived + 10), from: null },
      ]);
      // The journal cannot tell what landed: it sends every change again from where it last
      // knew the job, with what happened since.
      await store.record([
        { job: job(started, "done", arrived + 20), from: null, retried: true },
        { job: job(brief, "done", arrived + 10), from: null, retried: true },
        { job: job(unseen, "running", arrived + 20), from: null, retried: true },
        { job: job(unseenDone, "failed", arrived + 20), from: null, retried: true },
        { job: job(stillRunning, "running", arrived + 20), from: null, retried: true },
      ]);
      assert.deepEqual(await store.stats(), {
        queued: 0,
        running: 2,
        dead: 0,
        abandoned: 0,
        total: 5,
      });
      assert.deepEqual(
        (await store.getMany([started, brief, unseen, unseenDone, stillRunning]))
          .map((record) => record?.state),
        ["done", "done", "running", "failed", "running"],
      );
      // Only the two running ones were active: a dead node leaves those two abandoned.
      assert.deepEqual(await store.recover(10 * LEASE, 3), { abandoned: 2, requeued: 0, dead: 0 });
      assert.deepEqual((await store.get(started))?.state, "done");
      assert.deepEqual((await store.stats()).abandoned, 2);
    });
  });

  Deno.test(`${kind} store: a write of 2,000 sync jobs with long non-ASCII model names is stored whole`, async () => {
    await withStore(kind, async (store) => {
      await store.heartbeat("n1", LEASE, 0);
      const arrived = Date.UTC(2026, 11, 3);
      const model = "模型".repeat(150);
      const changes: SyncChange[] = Array.from({ length: 2000 }, (_, i) => ({
        job: {
          ...syncJob(newRequestId(arrived), "n1", i % 2 ? "done" : "running", arrived + 5),
          model,
          createdAt: arrived,
        },
        from: null,
      }));
      await store.record(changes); // after an outage, a write can be this big
      assert.deepEqual(await store.stats(), {
        queued: 0,
        running: 1000,
        dead: 0,
        abandoned: 0,
        total: 2000,
      });
      for (const i of [0, 1, 998, 1999]) {
        assert.deepEqual(await store.get(changes[i].job.id), changes[i].job, `job ${i}`);
      }
    });
  });

  Deno.test(`${kind} store: async jobs are claimed in lane order and completed once`, async () => {
    await withStore(kind, async (store) => {
      await store.enqueue(asyncJobs("b1", 5), 0);
      const first = await store.claim("a", "n1", 2, 1);
      assert.deepEqual(first.map((j) => [j.id, j.state, j.attempts, j.node]), [
        ["b1-0", "running", 1, "n1"],
        ["b1-1", "running", 1, "n1"],
      ]);
      assert.deepEqual(first[0].payload, '{"i":0}');
      assert.deepEqual(await store.laneSize("a"), 3);
      assert(await store.complete("b1-0", "n1", 1, "done", '{"ok":1}', 2));
      assert(!await store.complete("b1-0", "n1", 1, "done", '{"ok":2}', 3), "second completion");
      assert(!await store.complete("b1-1", "n2", 1, "done", "{}", 3), "another node's job");
      assert(!await store.complete("b1-1", "n1", 7, "done", "{}", 3), "a stale attempt");
      assert(await store.complete("b1-1", "n1", 1, "failed", '{"status":500}', 3));
      assert.deepEqual((await store.get("b1-0"))?.result, '{"ok":1}');
      assert.deepEqual(await store.groupCounts("b1"), { done: 1, failed: 1, cancelled: 0 });
      assert.deepEqual(await store.stats(), {
        queued: 3,
        running: 0,
        dead: 0,
        abandoned: 0,
        total: 5,
      });
      assert.deepEqual(await store.claim("other-lane", "n1", 5, 4), []);
    });
  });

  Deno.test(`${kind} store: concurrent takers never get the same job`, async () => {
    await withStore(kind, async (store) => {
      await store.enqueue(asyncJobs("b2", 120), 0);
      const takers = Array.from({ length: 8 }, (_, i) => drain(store, `n${i}`, 1));
      const taken = (await Promise.all(takers)).flat().map((j) => j.id);
      assert.deepEqual(taken.length, 120);
      assert.deepEqual(new Set(taken).size, 120);
      assert.deepEqual((await store.stats()).running, 120);
    });
  });

  Deno.test(`${kind} store: an expired lease puts claimed jobs back exactly once`, async () => {
    await withStore(kind, async (store) => {
      await store.heartbeat("n1", LEASE, 0);
      await store.enqueue(asyncJobs("b3", 3), 0);
      await store.claim("a", "n1", 2, 10);
      await store.heartbeat("n1", LEASE, 500);
      assert.deepEqual(await store.recover(1400, 3), { abandoned: 0, requeued: 0, dead: 0 });
      // n1 stops heartbeating; five recoverers race after its lease ran out.
      const races = await Promise.all(Array.from({ length: 5 }, () => store.recover(1600, 3)));
      assert.deepEqual(races.reduce((sum, r) => sum + r.requeued, 0), 2);
      assert(!await store.complete("b3-0", "n1", 1, "done", "{}", 1700), "late node's result");
      const again = await store.claim("a", "n2", 5, 1700);
      assert.deepEqual(again.map((j) => [j.id, j.attempts]), [["b3-0", 2], ["b3-1", 2], [
        "b3-2",
        1,
      ]]);
      assert(await store.complete("b3-0", "n2", 2, "done", "{}", 1800));
    });
  });

  Deno.test(`${kind} store: a dead node's sync jobs are abandoned, never re-run`, async () => {
    await withStore(kind, async (store) => {
      await store.heartbeat("old", LEASE, 0);
      await store.record([
        { job: syncJob("s1", "old", "queued", 1), from: null },
        { job: syncJob("s2", "old", "queued", 1), from: null },
      ]);
      await store.record([{ job: syncJob("s2", "old", "running", 2), from: "queued" }]);
      await store.heartbeat("new", LEASE, 2000);
      assert.deepEqual(await store.recover(2000, 3), { abandoned: 2, requeued: 0, dead: 0 });
      assert.deepEqual((await store.get("s2"))?.state, "abandoned");
      assert.deepEqual(await store.stats(), {
        queued: 0,
        running: 0,
        dead: 0,
        abandoned: 2,
        total: 2,
      });
      assert.deepEqual(await store.recover(3000, 3), { abandoned: 0, requeued: 0, dead: 0 });
    });
  });

  Deno.test(`${kind} store: recovery finds dead nodes among live ones by name`, async () => {
    await withStore(kind, async (store) => {
      // Names that sort next to each other: one a prefix of another, a control character.
      const nodes = ["a", "a\u0001", "aa", "ab", "b"];
      const dead = new Set(["a\u0001", "ab"]);
      for (const node of nodes) {
        await store.heartbeat(node, LEASE, dead.has(node) ? 0 : 5000);
        await store.record([0, 1, 2].map((i) => ({
          job: syncJob(`${node}-${i}`, node, "queued", 1),
          from: null,
        })));
      }
      assert.deepEqual(await store.recover(2000, 3), { abandoned: 6, requeued: 0, dead: 0 });
      for (const node of nodes) {
        const states = await Promise.all(
          [0, 1, 2].map(async (i) => (await store.get(`${node}-${i}`))?.state),
        );
        assert.deepEqual(states, Array(3).fill(dead.has(node) ? "abandoned" : "queued"), node);
      }
      assert.deepEqual(await store.recover(3000, 3), { abandoned: 0, requeued: 0, dead: 0 });
    });
  });

  Deno.test(`${kind} store: attempts run out into the dead letters`, async () => {
    await withStore(kind, async (store) => {
      await store.enqueue(asyncJobs("b4", 1), 0);
      let now = 0;
      for (const node of ["n1", "n2"]) {
        await store.heartbeat(node, LEASE, now);
        assert.deepEqual((await store.claim("a", node, 1, now)).length, 1);
        now += 2 * LEASE;
        await store.recover(now, 2);
      }
      const [dead] = await store.deadLetters(10);
      assert.deepEqual([dead.id, dead.state, dead.attempts], ["b4-0", "dead", 2]);
      assert(dead.result?.includes("max_attempts_exceeded"));
      assert.deepEqual(await store.groupCounts("b4"), { done: 0, failed: 1, cancelled: 0 });
      assert.deepEqual((await store.stats()).dead, 1);
      assert.deepEqual(await store.claim("a", "n3", 1, now), []);
    });
  });

  Deno.test(`${kind} store: released jobs go back to their place, the attempt undone`, async () => {
    await withStore(kind, async (store) => {
      await store.enqueue(asyncJobs("b5", 4), 0);
      const held = await store.claim("a", "n1", 3, 1);
      await store.release(held.slice(0, 2).map((j) => j.id), "n1", 2);
      await store.release(["b5-2"], "someone-else", 2);
      const next = await store.claim("a", "n2", 4, 3);
      assert.deepEqual(next.map((j) => [j.id, j.attempts]), [["b5-0", 1], ["b5-1", 1], [
        "b5-3",
        1,
      ]]);
      assert.deepEqual((await store.get("b5-2"))?.node, "n1");
    });
  });

  Deno.test(`${kind} store: cancelling leaves claimed jobs alone and counts once`, async () => {
    await withStore(kind, async (store) => {
      await store.enqueue(asyncJobs("b8", 4), 0);
      await store.claim("a", "n1", 1, 1);
      const ids = ["b8-0", "b8-1", "b8-2", "b8-3"];
      assert.deepEqual(await store.cancelQueued(ids, 2), 3);
      assert.deepEqual(await store.cancelQueued(ids, 3), 0);
      assert.deepEqual(await store.laneSize("a"), 0);
      const states = (await store.getMany([...ids, "nope"])).map((j) => j?.state ?? null);
      assert.deepEqual(states, ["running", "cancelled", "cancelled", "cancelled", null]);
      assert.deepEqual(await store.groupCounts("b8"), { done: 0, failed: 0, cancelled: 3 });
      assert.deepEqual((await store.stats()).queued, 0);
    });
  });

  Deno.test(`${kind} store: finished records and dead letters expire after retention`, async () => {
    await withStore(kind, async (store) => {
      await store.heartbeat("n1", LEASE, 0);
      await store.enqueue(asyncJobs("b6", 2), 0);
      const [a, b] = await store.claim("a", "n1", 2, 0);
      await store.complete(a.id, "n1", 1, "done", "{}", 100);
      await store.complete(b.id, "n1", 1, "dead", "{}", 100);
      const retention = { finishedMs: 1000, deadMs: 5000 };
      assert.deepEqual(await store.purge(1000, retention), 0);
      assert.deepEqual(await store.purge(2000, retention), 1);
      assert.deepEqual(await store.get(a.id), null);
      assert.deepEqual((await store.stats()).dead, 1);
      assert.deepEqual(await store.purge(6000, retention), 1);
      assert.deepEqual(await store.stats(), {
        queued: 0,
        running: 0,
        dead: 0,
        abandoned: 0,
        total: 2,
      });
    });
  });

  Deno.test(`${kind} store: big payloads, results and blobs come back whole`, async () => {
    await withStore(kind, async (store) => {
      const big = (i: number) => JSON.stringify({ i, text: "añ€😀".repeat(30_000 + i) });
      await store.enqueue(asyncJobs("b7", 2, "a", big), 0);
      const [one] = await store.claim("a", "n1", 1, 1);
      assert.deepEqual(one.payload, big(0));
      const result = "r".repeat(150_000);
      assert(await store.complete(one.id, "n1", 1, "done", result, 2));
      assert.deepEqual((await store.get(one.id))?.result, result);
      const bytes = crypto.getRandomValues(new Uint8Array(65_536)).map((b, i) => b ^ i);
      const blob = new Uint8Array(1_300_000).map((_, i) => bytes[i % bytes.length]);
      await store.putBlob("f1", blob);
      assert.deepEqual(await store.getBlob("f1"), blob);
      await store.putBlob("f1", new Uint8Array([1, 2, 3]));
      assert.deepEqual(await store.getBlob("f1"), new Uint8Array([1, 2, 3]));
      await store.deleteBlob("f1");
      assert.deepEqual(await store.getBlob("f1"), null);
    });
  });

  Deno.test(`${kind} store: documents are created once and replaced only when unchanged`, async () => {
    await withStore(kind, async (store) => {
      assert(await store.createDoc("batch", "x", { n: 1 }, 1));
      assert(!await store.createDoc("batch", "x", { n: 9 }, 1));
      await store.createDoc("batch", "y", { n: 2 }, 2);
      await store.createDoc("batch", "z", { n: 3 }, 3);
      const doc = await store.getDoc<{ n: number }>("batch", "x");
      assert.deepEqual(doc?.value, { n: 1 });
      assert(await store.replaceDoc("batch", "x", doc!.version, { n: 10 }));
      assert(!await store.replaceDoc("batch", "x", doc!.version, { n: 11 }), "stale version");
      assert.deepEqual((await store.getDoc("batch", "x"))?.value, { n: 10 });
      assert.deepEqual(await store.listDocs("batch", 10), [{ n: 3 }, { n: 2 }, { n: 10 }]);
      assert.deepEqual(await store.listDocs("batch", 1, "z"), [{ n: 2 }]);
      await store.deleteDoc("batch", "y");
      assert.deepEqual(await store.listDocs("batch", 10), [{ n: 3 }, { n: 10 }]);
      assert.deepEqual(await store.getDoc("file", "x"), null);
    });
  });
}
