/**
 * The resident set's bookkeeping without Docker: the transition table, leases and drains,
 * the evicting marks a placement sets from its decision on, and one change event per change.
 * Also the waiting client's ETA and wait line (lib/eta.ts) and the ttl unloads
 * (lib/idle_unload.ts), which read the same snapshot.
 */
import assert from "node:assert/strict";
import { ResidentSet } from "../lib/residents.ts";
import { startEstimateMs, waitLine } from "../lib/eta.ts";
import type { ModelSnapshot } from "../lib/swap_manager.ts";
import { IdleUnload } from "../lib/idle_unload.ts";
import { silentLogger } from "../lib/log.ts";
import { makeJob } from "./support/jobs.ts";
import { waitFor } from "./support/wait_for.ts";
import { CapturedLog } from "./support/log_capture.ts";

function residentSet(start = 1000) {
  let now = start;
  let changes = 0;
  const set = new ResidentSet({ now: () => now }, () => changes++);
  return {
    set,
    changes: () => changes,
    advance: (ms: number) => now += ms,
  };
}

/** Whether `promise` settled by the time every queued microtask ran. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => done = true, () => done = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  return done;
}

Deno.test("ResidentSet: a model goes stopped → starting → ready → draining → stopping → stopped, and no other way", () => {
  const { set } = residentSet();
  assert.throws(() => set.move("a", "ready"), /no transition from stopped to ready/);
  set.move("a", "starting");
  assert.throws(() => set.move("a", "draining"), /no transition from starting to draining/);
  set.move("a", "ready");
  set.move("a", "draining");
  assert.throws(() => set.move("a", "ready"), /no transition from draining to ready/);
  set.move("a", "stopping");
  set.move("a", "stopped");
  assert.equal(set.phaseOf("a"), "stopped");
  assert.equal(set.has("a"), false);
  assert.deepEqual(set.list(), []);
});

Deno.test("ResidentSet: every phase change is told once; leases and releases are not told", () => {
  const { set, changes } = residentSet();
  set.move("a", "starting");
  set.move("a", "ready");
  assert.equal(changes(), 2);
  const lease = set.lease("a")!;
  lease.release();
  lease.release(); // a second release is a no-op, not a negative count
  assert.equal(changes(), 2);
  assert.equal(set.list()[0].inflight, 0);
});

Deno.test("ResidentSet: leases only on a ready model, and they stamp lastUsed", () => {
  const { set, advance } = residentSet();
  assert.equal(set.lease("a"), null);
  set.move("a", "starting");
  assert.equal(set.lease("a"), null);
  set.move("a", "ready");
  advance(500);
  const lease = set.lease("a");
  assert.notEqual(lease, null);
  assert.equal(set.list()[0].lastUsed, 1500);
  assert.equal(set.list()[0].inflight, 1);
  advance(700);
  lease!.release();
  assert.equal(set.list()[0].lastUsed, 2200);
  assert.deepEqual(set.occupants(), [{ model: "a", lastUsed: 2200 }]);
});

Deno.test("ResidentSet: a drain waits for the last lease; the model takes no new one meanwhile", async () => {
  const { set } = residentSet();
  set.move("a", "starting");
  set.move("a", "ready");
  const first = set.lease("a")!;
  const second = set.lease("a")!;
  const drained = set.drain("a");
  assert.equal(set.phaseOf("a"), "draining");
  assert.equal(set.lease("a"), null);
  first.release();
  assert.equal(await settled(drained), false);
  second.release();
  assert.equal(await settled(drained), true);
});

Deno.test("ResidentSet: a container gone mid-drain wakes the drain instead of leaving it hanging", async () => {
  const { set } = residentSet();
  set.move("a", "starting");
  set.move("a", "ready");
  set.lease("a");
  const drained = set.drain("a");
  set.forget("a");
  assert.equal(await settled(drained), true);
  assert.equal(set.phaseOf("a"), "stopped");
  set.forget("a"); // forgetting a stopped model is a no-op
});

Deno.test("ResidentSet: residents marked evicting refuse new leases until every placement that marked them unmarks; the marks are told once", () => {
  const { set, changes } = residentSet();
  for (const id of ["a", "b"]) {
    set.move(id, "starting");
    set.move(id, "ready");
  }
  const before = changes();
  set.markEvicting(["a", "ghost"]);
  assert.equal(changes(), before + 1);
  set.markEvicting(["a"]); // a second placement: still marked, nothing new to tell
  assert.equal(changes(), before + 1);
  assert.equal(set.lease("a"), null);
  assert.notEqual(set.lease("b"), null);
  assert.deepEqual(set.list().map((r) => [r.model, r.evicting]), [["a", true], ["b", false]]);
  set.unmarkEvicting(["a"]);
  assert.equal(set.lease("a"), null, "the other placement still stops it");
  assert.equal(changes(), before + 1);
  set.unmarkEvicting(["a"]);
  assert.equal(changes(), before + 2);
  assert.notEqual(set.lease("a"), null);
});

function snapshotOf(residents: ModelSnapshot["residents"]): ModelSnapshot {
  return {
    loaded: null,
    phase: "idle",
    target: null,
    since: 0,
    inflight: 0,
    busy: false,
    residents,
  };
}

const resident = (model: string, phase: "ready" | "starting", since: number) => ({
  model,
  phase,
  since,
  inflight: 0,
  lastUsed: since,
  evicting: false,
  memoryGb: null,
});

Deno.test("startEstimateMs(): the rest of a load under way, then one service time per full turn", () => {
  const inputs = {
    now: 10_000,
    resident: resident("a", "starting", 4_000),
    loadMs: 8_000,
    serviceMs: 3_000,
    running: 0,
    ahead: 5,
    parallel: 2,
  };
  // 2 s of load left, then floor(5 / 2) = 2 turns of 3 s.
  assert.equal(startEstimateMs(inputs), 2_000 + 6_000);
  // Ready: no load at all.
  const ready = { ...inputs, resident: resident("a", "ready", 4_000) };
  assert.equal(startEstimateMs(ready), 6_000);
  // Not resident: a whole load, after half a service time when something runs.
  const cold = { ...inputs, resident: undefined, running: 1, ahead: 0 };
  assert.equal(startEstimateMs(cold), 8_000 + 1_500);
});

Deno.test("waitLine(): says which model loads, for how long, and the job's place and ETA", () => {
  const { job } = makeJob("a");
  const idle = snapshotOf([]);
  assert.equal(waitLine(job, 3, 12_400, idle, 0), "queued position=3 eta=12s");
  const loadingMine = snapshotOf([resident("a", "starting", 1_000)]);
  assert.equal(
    waitLine(job, 1, 4_000, loadingMine, 8_000),
    "loading model a 7s position=1 eta=4s",
  );
  const loadingOther = snapshotOf([resident("b", "starting", 1_000)]);
  assert.equal(
    waitLine(job, 2, 30_000, loadingOther, 6_000),
    "queued position=2 eta=30s (loading model b 5s)",
  );
});

Deno.test("IdleUnload: a model whose ttl ran out is unloaded once, even while its unload waits behind the swap lock", async () => {
  const now = 10_000;
  let asked = 0;
  let finish = () => {};
  const snapshot = (): ModelSnapshot =>
    snapshotOf([{ ...resident("a", "ready", 0), lastUsed: now - 5_000 }]);
  const idle = new IdleUnload({
    models: {
      snapshot,
      unload: () => {
        asked++;
        return new Promise<string[]>((resolve) => finish = () => resolve(["a"]));
      },
    },
    clock: { now: () => now },
    log: silentLogger,
    ttlOf: () => 1_000,
    hasWaiting: () => false,
    // The dispatcher arms again on every pump; here, at once.
    pump: () => idle.arm(snapshot()),
  });
  idle.arm(snapshot());
  await waitFor("the unload to be asked", () => asked >= 1);
  // Many turns of the event loop while the unload is pending: no second unload.
  for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 0));
  assert.equal(asked, 1);
  finish();
  idle.stop();
});

Deno.test("IdleUnload: a model used again while its unload waited behind the swap lock stays loaded, and the next decision comes once that unload settled; one still idle then goes", async () => {
  const now = 10_000;
  let lastUsed = now - 5_000;
  let still: ((model: string) => boolean) | null = null;
  let pumps = 0;
  const snapshot = (): ModelSnapshot => snapshotOf([{ ...resident("a", "ready", 0), lastUsed }]);
  const log = new CapturedLog();
  const idle = new IdleUnload({
    models: {
      snapshot,
      unload: (_cause, _model, check) => {
        still = check ?? null;
        return Promise.resolve([]);
      },
    },
    clock: { now: () => now },
    log,
    ttlOf: () => 1_000,
    hasWaiting: () => false,
    pump: () => pumps++,
  });
  idle.arm(snapshot());
  const asked = await waitFor("the unload to be asked", () => still);
  // While a load held the lock, a request used the model half a ttl ago.
  lastUsed = now - 500;
  assert.equal(asked("a"), false);
  assert.deepEqual(log.of("idle_unload"), []);
  // Idle for its whole ttl when the lock comes: unloaded, and said so.
  lastUsed = now - 1_000;
  assert.equal(asked("a"), true);
  assert.equal(log.of("idle_unload").length, 1);
  // Once the unload settled, the dispatcher decides again, and so sets the timer again for a
  // model the check kept: one pump when the timer fired, one when the unload settled.
  await waitFor("a decision once the unload settled", () => pumps >= 2);
  idle.stop();
});
