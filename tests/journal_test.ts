import assert from "node:assert/strict";
import { systemClock } from "../lib/clock.ts";
import { SyncJournal } from "../lib/journal.ts";
import { silentLogger } from "../lib/log.ts";
import type { JobStore, SyncChange } from "../lib/store/contract.ts";
import { KvJobStore } from "../lib/store/kv_store.ts";
import { StoreStatus } from "../lib/store/status.ts";
import { makeJob } from "./support/jobs.ts";
import { waitFor } from "./support/wait_for.ts";

/**
 * A journal on an in-memory KV store whose writes go through `record` (given the store's own),
 * with a store status that retries every `retryMs`; both closed after `fn`.
 */
async function withJournal(
  record: (write: JobStore["record"], changes: readonly SyncChange[]) => Promise<void>,
  fn: (parts: { store: KvJobStore; status: StoreStatus; journal: SyncJournal }) => Promise<void>,
  retryMs = 10,
): Promise<void> {
  const store = await KvJobStore.open(":memory:");
  const status = new StoreStatus(store, silentLogger, retryMs);
  try {
    const write = store.record.bind(store);
    store.record = (changes) => record(write, changes);
    const journal = new SyncJournal({
      store,
      status,
      node: "n1",
      clock: systemClock,
      log: silentLogger,
    });
    await fn({ store, status, journal });
  } finally {
    status.close();
    await store.close();
  }
}

Deno.test("a group commit that landed but reported failure is written again: the record reads as the request ended, and it is counted once", async () => {
  let failures = 0;
  // The write lands, then its answer is lost (a timeout after the commit): the journal
  // cannot tell what of it is in the store.
  const landsThenFails = async (write: JobStore["record"], changes: readonly SyncChange[]) => {
    await write(changes);
    if (failures++ === 0) throw new Error("the answer to the commit was lost");
  };
  await withJournal(landsThenFails, async ({ store, status, journal }) => {
    const { job } = makeJob("a", { now: systemClock.now() });
    const recorded = journal.add(job);
    job.transition("running");
    await assert.rejects(recorded, /lost/);
    job.transition("done");
    await waitFor("the store to be back and the write retried", () => status.up && failures === 2);
    await journal.settled();
    assert.equal((await store.get(job.id))?.state, "done");
    assert.deepEqual(await store.stats(), {
      queued: 0,
      running: 0,
      dead: 0,
      abandoned: 0,
      total: 1,
    }, "the request is counted once, and not as running");
    assert.deepEqual(await store.recover(Date.now() + 60_000, 3), {
      abandoned: 0,
      requeued: 0,
      dead: 0,
    });
    // A request that arrives and ends within one write afterwards is stored as before.
    const { job: brief } = makeJob("a", { now: systemClock.now() });
    journal.add(brief);
    brief.transition("running");
    brief.transition("done");
    await journal.settled();
    assert.equal((await store.get(brief.id))?.state, "done");
  });
});

Deno.test("a write that fails tells its listener, once, which jobs it was the first to record; those sent again are not told twice", async () => {
  let failures = 0;
  const failsTwice = (write: JobStore["record"], changes: readonly SyncChange[]) =>
    failures++ < 2 ? Promise.reject(new Error("disk full")) : write(changes);
  await withJournal(failsTwice, async ({ store, status, journal }) => {
    const told: { ids: string[]; message: string }[] = [];
    journal.onFailedAdds((ids, err) => told.push({ ids: [...ids], message: String(err) }));
    const { job: first } = makeJob("a", { now: systemClock.now() });
    const { job: second } = makeJob("a", { now: systemClock.now() });
    await Promise.allSettled([journal.add(first), journal.add(second)]);
    assert.deepEqual(told.map(({ ids }) => ids.toSorted()), [[first.id, second.id].toSorted()]);
    assert.match(told[0].message, /disk full/);
    // The next write carries both again, with a third job new in it: only the third is told.
    first.transition("running");
    const { job: third } = makeJob("a", { now: systemClock.now() });
    await journal.add(third).catch(() => {});
    assert.deepEqual(told.map(({ ids }) => ids), [told[0].ids, [third.id]]);
    await waitFor("the store to be back and every job written", () => status.up && failures > 2);
    await journal.settled();
    assert.equal(told.length, 2, "a write that lands tells nothing");
    assert.deepEqual((await store.getMany([first.id, second.id, third.id])).map((r) => r?.state), [
      "running",
      "queued",
      "queued",
    ]);
  });
});

Deno.test("a job admitted while the write that finds the store down is on its way is told too while the store stays down, and nothing is written meanwhile", async () => {
  let failWrite: (err: Error) => void = () => {};
  let writes = 0;
  // The first write hangs until the test fails it, as a write to a Redis that just stopped.
  const hangsThenFails = (_write: JobStore["record"], _changes: readonly SyncChange[]) => {
    writes++;
    return new Promise<void>((_, reject) => failWrite = reject);
  };
  // The status does not look again during the test: the store stays down.
  await withJournal(hangsThenFails, async ({ status, journal }) => {
    const told: string[][] = [];
    journal.onFailedAdds((ids) => told.push([...ids]));
    const { job: first } = makeJob("a", { now: systemClock.now() });
    const recorded = journal.add(first);
    await waitFor("the first write to be on its way", () => writes === 1);
    const { job: second } = makeJob("a", { now: systemClock.now() });
    journal.add(second);
    failWrite(new Error("connection refused"));
    await assert.rejects(recorded, /connection refused/);
    await waitFor("the second job to be told", () => told.length === 2);
    assert.deepEqual(told, [[first.id], [second.id]]);
    assert.equal(status.up, false);
    assert.equal(writes, 1, "nothing written while the store is down");
  }, 60_000);
});
