import assert from "node:assert/strict";
import {
  decideFifo,
  type Decision,
  type SchedulerView,
  type WaitingJob,
} from "../lib/scheduler.ts";

const job = (model: string, seq: number): WaitingJob => ({ model, seq, enqueuedAt: seq });

function view(overrides: Partial<SchedulerView>): SchedulerView {
  return {
    waiting: [],
    loaded: null,
    swapping: false,
    inflight: 0,
    freeWorkers: 2,
    now: 100,
    ...overrides,
  };
}

Deno.test("decideFifo() waits when nothing is queued", () => {
  assert.deepEqual(decideFifo(view({ loaded: "a" })), { kind: "wait" });
});

Deno.test("decideFifo() serves the oldest job when its model is loaded and a worker is free", () => {
  const waiting = [job("a", 1), job("a", 2)];
  assert.deepEqual(decideFifo(view({ waiting, loaded: "a" })), { kind: "serve", job: waiting[0] });
});

Deno.test("decideFifo() waits for a worker when all are busy", () => {
  const waiting = [job("a", 1)];
  assert.deepEqual(
    decideFifo(view({ waiting, loaded: "a", inflight: 2, freeWorkers: 0 })),
    { kind: "wait" },
  );
});

Deno.test("decideFifo() asks for a swap to the oldest job's model when nothing is in flight", () => {
  const waiting = [job("b", 1), job("a", 2)];
  assert.deepEqual(decideFifo(view({ waiting, loaded: "a" })), { kind: "swap", to: "b" });
});

Deno.test("decideFifo() lets in-flight requests finish before a swap and starts no new ones", () => {
  const waiting = [job("b", 1), job("a", 2)];
  assert.deepEqual(decideFifo(view({ waiting, loaded: "a", inflight: 1 })), { kind: "wait" });
});

Deno.test("decideFifo() waits while a swap is under way", () => {
  const waiting = [job("b", 1)];
  assert.deepEqual(decideFifo(view({ waiting, swapping: true })), { kind: "wait" });
});

Deno.test("decideFifo() swaps on every change of model in A,B,A,B (the seed's cost)", () => {
  const order = ["a", "b", "a", "b"];
  let loaded: string | null = null;
  let swaps = 0;
  const waiting = order.map((m, i) => job(m, i));
  while (waiting.length > 0) {
    const decision: Decision = decideFifo(view({ waiting, loaded }));
    if (decision.kind === "swap") {
      loaded = decision.to;
      swaps++;
    } else if (decision.kind === "serve") {
      waiting.splice(waiting.indexOf(decision.job), 1);
    } else {
      assert.fail("FIFO stalled with work waiting");
    }
  }
  assert.equal(swaps, 4);
});
