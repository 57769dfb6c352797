import assert from "node:assert/strict";
import {
  type Action,
  decideAffinity,
  decideFifo,
  decideGreedy,
  type Decision,
  type Resident,
  type SchedulerRules,
  type SchedulerView,
  step,
  type WaitingJob,
} from "../lib/scheduler.ts";
import { WaitingJobs } from "../lib/waiting.ts";
import type { Priority } from "../lib/priority.ts";
import { victimsFor } from "../lib/placement.ts";

const S = 1000;
const job = (
  model: string,
  seq: number,
  at = seq,
  priority: Priority = "interactive",
): WaitingJob => ({
  model,
  seq,
  enqueuedAt: at,
  priority,
});

const rules: SchedulerRules = {
  maxWaitMs: (model) => (model === "urgent" ? 5 * S : 60 * S),
  minResidencyMs: () => 10 * S,
  batchAgingMs: 600 * S,
  loadMs: (model) => (model === "giant" ? 180 * S : 7 * S),
  // Long enough that no backlog counts as short (rule 3c has its own test).
  serviceMs: () => 1000 * S,
};

/** The one-model-at-a-time situation most tests describe: `loaded`, busy or not. */
interface SingleModel {
  waiting?: WaitingJob[];
  loaded?: string | null;
  loadedSince?: number;
  /** A swap is under way (nothing is ready). */
  swapping?: boolean;
  switchingTo?: string | null;
  inflight?: number;
  freeWorkers?: number;
  now?: number;
}

function view(
  {
    waiting = [],
    loaded = null,
    loadedSince = 0,
    swapping = false,
    switchingTo = null,
    inflight = 0,
    freeWorkers = 2,
    now = 100,
  }: SingleModel,
): SchedulerView {
  const residents = new Map<string, Resident>();
  if (loaded !== null && !swapping) {
    residents.set(loaded, {
      model: loaded,
      ready: true,
      since: loadedSince,
      inflight,
      free: freeWorkers,
    });
  }
  return {
    waiting: WaitingJobs.of(waiting),
    residents,
    // One model at a time: every other resident makes room.
    victimsFor: (model) => [...residents.keys()].filter((m) => m !== model),
    placing: swapping,
    switchingTo,
    now,
  };
}

// --- fifo -------------------------------------------------------------------------------

Deno.test("decideFifo() waits when nothing is queued", () => {
  assert.deepEqual(decideFifo(view({ loaded: "a" }), rules), { kind: "wait" });
});

Deno.test("decideFifo() serves the oldest job when its model is loaded and a worker is free", () => {
  const waiting = [job("a", 1), job("a", 2)];
  assert.deepEqual(decideFifo(view({ waiting, loaded: "a" }), rules), {
    kind: "serve",
    job: waiting[0],
  });
  assert.deepEqual(decideFifo(view({ waiting, loaded: "a", freeWorkers: 0 }), rules), {
    kind: "wait",
  });
});

Deno.test("decideFifo() swaps to the oldest job's model even when the loaded one has work", () => {
  const waiting = [job("b", 1), job("a", 2)];
  assert.deepEqual(decideFifo(view({ waiting, loaded: "a" }), rules), { kind: "swap", to: "b" });
});

// --- greedy -----------------------------------------------------------------------------

Deno.test("decideGreedy() serves the loaded model while it has work, however old the rest is", () => {
  const waiting = [job("b", 1, 0), job("a", 2, 99 * S)];
  const decision = decideGreedy(view({ waiting, loaded: "a", now: 10_000 * S }), rules);
  assert.deepEqual(decision, { kind: "serve", job: waiting[1] });
});

Deno.test("decideGreedy() swaps to the oldest other job when the loaded model has none", () => {
  const waiting = [job("c", 1), job("b", 2)];
  assert.deepEqual(decideGreedy(view({ waiting, loaded: "a" }), rules), { kind: "swap", to: "c" });
});

// --- affinity ---------------------------------------------------------------------------

Deno.test("decideAffinity() groups by model: A,B,A,B with A loaded serves both A first", () => {
  const waiting = [job("a", 1), job("b", 2), job("a", 3), job("b", 4)];
  const first = decideAffinity(view({ waiting, loaded: "a", now: 10 * S }), rules);
  assert.deepEqual(first, { kind: "serve", job: waiting[0] });
  const second = decideAffinity(
    view({ waiting: [waiting[1], waiting[2], waiting[3]], loaded: "a", now: 10 * S }),
    rules,
  );
  assert.deepEqual(second, { kind: "serve", job: waiting[2] });
});

Deno.test("decideAffinity() lets a job for another model pull a swap once it waited max_wait", () => {
  const waiting = [job("b", 1, 0), job("a", 2, 50 * S)];
  const before = decideAffinity(
    view({ waiting, loaded: "a", loadedSince: 0, now: 59 * S, freeWorkers: 0 }),
    rules,
  );
  assert.deepEqual(before, { kind: "wait", until: 60 * S }); // says when to decide again
  const at = decideAffinity(view({ waiting, loaded: "a", loadedSince: 0, now: 60 * S }), rules);
  assert.deepEqual(at, { kind: "swap", to: "b" });
});

Deno.test("decideAffinity() keeps a just-loaded model for max_wait before an overdue job pulls", () => {
  // b waited far past max_wait while a was loading: a still gets its max_wait of service.
  const waiting = [job("b", 1, 0), job("a", 2, 1 * S)];
  const decision = decideAffinity(
    view({ waiting, loaded: "a", loadedSince: 500 * S, now: 520 * S }),
    rules,
  );
  assert.deepEqual(decision, { kind: "serve", job: waiting[1] });
  const later = decideAffinity(
    view({ waiting, loaded: "a", loadedSince: 500 * S, now: 560 * S }),
    rules,
  );
  assert.deepEqual(later, { kind: "swap", to: "b" });
});

Deno.test("decideAffinity() honours a per-model max_wait", () => {
  const waiting = [job("urgent", 1, 0), job("a", 2, 0)];
  // "a" took 7 s to load, so it stays 7 s; then urgent's 5 s max_wait has passed.
  assert.deepEqual(
    decideAffinity(view({ waiting, loaded: "a", loadedSince: 0, now: 7 * S }), rules),
    { kind: "swap", to: "urgent" },
  );
});

Deno.test("decideAffinity() keeps a loaded model at least as long as loading it took", () => {
  // The giant took 180 s to load: a job past its max_wait waits until the giant earned it.
  const waiting = [job("b", 1, 0), job("giant", 2, 0)];
  const busy = { loaded: "giant", loadedSince: 0, now: 100 * S, freeWorkers: 0 };
  assert.deepEqual(decideAffinity(view({ waiting, ...busy }), rules), {
    kind: "wait",
    until: 180 * S,
  });
  const late = decideAffinity(
    view({ waiting, loaded: "giant", loadedSince: 0, now: 180 * S }),
    rules,
  );
  assert.deepEqual(late, { kind: "swap", to: "b" });
});

Deno.test("decideAffinity() lets an interactive job pull a batch-only model after min_residency", () => {
  const waiting = [job("chat", 2, 3 * S, "interactive"), job("n8n", 1, 0, "batch")];
  const early = decideAffinity(
    view({ waiting, loaded: "n8n", loadedSince: 0, now: 5 * S }),
    rules,
  );
  assert.deepEqual(early, { kind: "serve", job: waiting[1] });
  const resident = decideAffinity(
    view({ waiting, loaded: "n8n", loadedSince: 0, now: 10 * S }),
    rules,
  );
  assert.deepEqual(resident, { kind: "swap", to: "chat" });
});

Deno.test("decideAffinity() serves interactive before batch within a model, until batch ages", () => {
  const batch = job("a", 1, 0, "batch");
  const chat = job("a", 2, 100 * S, "interactive");
  const fresh = decideAffinity(view({ waiting: [batch, chat], loaded: "a", now: 200 * S }), rules);
  assert.deepEqual(fresh, { kind: "serve", job: chat });
  const aged = decideAffinity(view({ waiting: [batch, chat], loaded: "a", now: 600 * S }), rules);
  assert.deepEqual(aged, { kind: "serve", job: batch });
});

Deno.test("decideAffinity() picks the next model by priority, then by age", () => {
  const waiting = [job("old-batch", 1, 0, "batch"), job("chat", 2, 50 * S, "interactive")];
  assert.deepEqual(decideAffinity(view({ waiting, loaded: null, now: 60 * S }), rules), {
    kind: "swap",
    to: "chat",
  });
});

// --- step: the executor's rules shared by the dispatcher and the simulator ---------------------

Deno.test("step() turns a swap with requests in flight into a drain", () => {
  const waiting = [job("b", 1)];
  const action: Action = step(decideFifo, view({ waiting, loaded: "a", inflight: 1 }), rules);
  assert.deepEqual(action, { kind: "drain", to: "b" });
});

Deno.test("step(): a drain toward a due job binds: no new job of the old model starts", () => {
  // b waited max_wait (60 s) with a up that long: due, so a's new job waits.
  const waiting = [job("b", 1, 0), job("a", 2, 61 * S)];
  const at = { loaded: "a", loadedSince: 0, now: 61 * S, switchingTo: "b" };
  const draining = view({ waiting, ...at, inflight: 1, freeWorkers: 1 });
  assert.deepEqual(step(decideAffinity, draining, rules), { kind: "drain", to: "b" });
  const drained = view({ waiting, ...at, inflight: 0 });
  assert.deepEqual(step(decideAffinity, drained, rules), { kind: "swap", to: "b" });
});

Deno.test("step(): a drain toward work that is not due yet gives way to new work for the loaded model", () => {
  // a busy with one request, b arrived (a had nothing waiting: drain), then a new a arrives.
  const b = job("b", 1, 10 * S);
  const a = job("a", 2, 10.03 * S);
  const draining = view({
    waiting: [b, a],
    loaded: "a",
    loadedSince: 0,
    now: 10.03 * S,
    switchingTo: "b",
    inflight: 1,
    freeWorkers: 1,
  });
  assert.deepEqual(step(decideAffinity, draining, rules), { kind: "serve", job: a });
  // Greedy decides at drain time too; FIFO keeps its word.
  assert.deepEqual(step(decideGreedy, draining, rules), { kind: "serve", job: a });
  assert.deepEqual(step(decideFifo, draining, rules), { kind: "drain", to: "b" });
});

Deno.test("decideAffinity() loads the model that serves the most waiting work per second of loading", () => {
  const giant = job("giant", 1, 0);
  const small = Array.from({ length: 6 }, (_, i) => job("small", 2 + i, S + i));
  assert.deepEqual(
    decideAffinity(view({ waiting: [giant, ...small], loaded: null, now: 10 * S }), rules),
    { kind: "swap", to: "small" },
  );
  // Once the giant's request is due (max_wait), it goes first whatever waits elsewhere.
  const later = view({ waiting: [giant, ...small], loaded: "other", now: 61 * S });
  assert.deepEqual(decideAffinity(later, rules), { kind: "swap", to: "giant" });
});

Deno.test("step() drops a decided swap when every job for its model left", () => {
  const waiting = [job("a", 2)];
  const action = step(decideAffinity, view({ waiting, loaded: "a", switchingTo: "b" }), rules);
  assert.deepEqual(action, { kind: "serve", job: waiting[0] });
});

Deno.test("step() decides nothing during a swap", () => {
  const waiting = [job("a", 1)];
  assert.deepEqual(step(decideGreedy, view({ waiting, swapping: true }), rules), { kind: "wait" });
});

Deno.test("FIFO swaps on every change of model in A,B,A,B; affinity swaps once", () => {
  const count = (policy: typeof decideFifo) => {
    const waiting = ["a", "b", "a", "b"].map((m, i) => job(m, i));
    let loaded = "a";
    let swaps = 0;
    while (waiting.length > 0) {
      const decision: Decision = policy(view({ waiting, loaded, now: 1 }), rules);
      if (decision.kind === "swap") {
        loaded = decision.to;
        swaps++;
      } else if (decision.kind === "serve") {
        waiting.splice(waiting.indexOf(decision.job), 1);
      } else {
        assert.fail("stalled with work waiting");
      }
    }
    return swaps;
  };
  assert.equal(count(decideFifo), 3);
  assert.equal(count(decideAffinity), 1);
});

// --- resident sets: several models up at once, by memory budget ------------------------

/** Residents on a 40 GB budget: a and b take 10 GB each, big 30. */
function residentView(
  residents: Resident[],
  { waiting = [] as WaitingJob[], placing = false, switchingTo = null as string | null, now = 100 },
): SchedulerView {
  const memory: Record<string, number> = { a: 10, b: 10, c: 10, big: 30 };
  const cap = { budgetGb: 40, footprint: (m: string) => ({ memoryGb: memory[m], endpoint: m }) };
  const byModel = new Map(residents.map((r) => [r.model, r]));
  // Least recently used = the one that became ready first, here.
  const occupants = residents.map((r) => ({ model: r.model, lastUsed: r.since }));
  return {
    waiting: WaitingJobs.of(waiting),
    residents: byModel,
    victimsFor: (model) => victimsFor(model, occupants, cap),
    placing,
    switchingTo,
    now,
  };
}

const up = (model: string, since = 0, inflight = 0, free = 2 - inflight): Resident => ({
  model,
  ready: true,
  since,
  inflight,
  free,
});

Deno.test("resident sets: a request for a resident model is served while another model loads", () => {
  const waiting = [job("a", 1)];
  const loading: Resident = { model: "b", ready: false, since: 0, inflight: 0, free: 0 };
  const v = residentView([up("a"), loading], { waiting, placing: true });
  for (const policy of [decideAffinity, decideGreedy, decideFifo]) {
    assert.deepEqual(step(policy, v, rules), { kind: "serve", job: waiting[0] });
  }
});

Deno.test("resident sets: a model that fits beside busy residents is loaded at once, stopping nothing", () => {
  const waiting = [job("a", 1), job("b", 2)];
  const v = residentView([up("a", 0, 2)], { waiting });
  assert.deepEqual(v.victimsFor("b"), []);
  assert.deepEqual(step(decideAffinity, v, rules), { kind: "swap", to: "b" });
  assert.deepEqual(step(decideGreedy, v, rules), { kind: "swap", to: "b" });
});

Deno.test("resident sets: a due model that needs room drains only its victim; the other resident keeps serving", () => {
  // a (used first) and b are up; big needs 30 GB, so a goes. big waited max_wait: due.
  const big = job("big", 1, 0);
  const forB = job("b", 2, 61 * S);
  const forA = job("a", 3, 61 * S);
  const v = residentView([up("a", 0, 1), up("b", 1, 0)], {
    waiting: [big, forB, forA],
    switchingTo: "big",
    now: 61 * S,
  });
  assert.deepEqual(v.victimsFor("big"), ["a"]);
  assert.deepEqual(step(decideAffinity, v, rules), { kind: "serve", job: forB, drainingTo: "big" });
  // With b's job gone, a's new job still waits: the drain binds.
  const rest = residentView([up("a", 0, 1), up("b", 1, 1)], {
    waiting: [big, forA],
    switchingTo: "big",
    now: 61 * S,
  });
  assert.deepEqual(step(decideAffinity, rest, rules), { kind: "drain", to: "big" });
});

Deno.test("resident sets: greedy places a model only where its victims have nothing waiting", () => {
  const v = residentView([up("a", 0, 2), up("b", 1, 2)], {
    waiting: [job("big", 1), job("a", 2), job("b", 3)],
  });
  assert.deepEqual(step(decideGreedy, v, rules), { kind: "wait" });
  const idle = residentView([up("a", 0, 2), up("b", 1, 2)], {
    waiting: [job("big", 1), job("b", 3)],
  });
  assert.deepEqual(step(decideGreedy, idle, rules), { kind: "drain", to: "big" });
});

Deno.test("decideAffinity() (3c): a due job waits one more max_wait while the loaded model clears a short backlog, 1.5 max_wait for a very short one", () => {
  const waiting = [job("b", 1, 0), job("a", 2, 50 * S), job("a", 3, 50 * S), job("a", 4, 50 * S)];
  const busy = { waiting, loaded: "a", loadedSince: 0, freeWorkers: 0, inflight: 2 };
  // Due by max_wait at 60 s, but a's backlog (3 waiting × 30 s / 2 workers: 45 s) is short:
  // b waits until 120 s at the latest.
  const shortJobs = { ...rules, serviceMs: () => 30 * S };
  assert.deepEqual(decideAffinity(view({ ...busy, now: 61 * S }), shortJobs), {
    kind: "wait",
    until: 120 * S,
  });
  assert.deepEqual(decideAffinity(view({ ...busy, now: 120 * S }), shortJobs), {
    kind: "swap",
    to: "b",
  });
  // 3 × 10 s / 2 = 15 s clears within half a max_wait: until 150 s at the latest.
  const veryShortJobs = { ...rules, serviceMs: () => 10 * S };
  assert.deepEqual(decideAffinity(view({ ...busy, now: 121 * S }), veryShortJobs), {
    kind: "wait",
    until: 150 * S,
  });
  assert.deepEqual(decideAffinity(view({ ...busy, now: 150 * S }), veryShortJobs), {
    kind: "swap",
    to: "b",
  });
  // The same backlog counted as long (1000 s per request): b is due at 60 s.
  assert.deepEqual(decideAffinity(view({ ...busy, now: 61 * S }), rules), {
    kind: "swap",
    to: "b",
  });
});
