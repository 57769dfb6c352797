/** The arrival gate: a burst of new requests comes into the event loop a few per turn. */
import assert from "node:assert/strict";
import { ArrivalGate, type Turns } from "../lib/arrival_gate.ts";

/** Turns run by hand: `soon` and `later` callbacks wait until the test runs them. */
class HandTurns implements Turns {
  time = 0;
  soonQueue: (() => void)[] = [];
  laterQueue: (() => void)[] = [];
  now = () => this.time;
  soon = (fn: () => void) => void this.soonQueue.push(fn);
  later = (fn: () => void) => void this.laterQueue.push(fn);

  /** The work in hand is done: `soon` callbacks run. */
  endOfWork(): void {
    for (const fn of this.soonQueue.splice(0)) fn();
  }

  /** A timer turn, `afterMs` after it was asked for. */
  async timerTurn(afterMs: number): Promise<void> {
    this.time += afterMs;
    for (const fn of this.laterQueue.splice(0)) fn();
    // The arrivals let in run their continuations.
    await Promise.resolve();
  }
}

/** Starts `n` arrivals; returns the order in which they were let in. */
function arrive(gate: ArrivalGate, n: number, from = 0): { order: number[]; passedAtOnce: number } {
  const order: number[] = [];
  let passedAtOnce = 0;
  for (let i = from; i < from + n; i++) {
    const held = gate.pass();
    if (held === null) {
      passedAtOnce++;
      order.push(i);
    } else held.then(() => order.push(i));
  }
  return { order, passedAtOnce };
}

const options = { perTurn: 3, maxPerTurn: 5, lateMs: 1 };

Deno.test("ArrivalGate: arrivals a few per turn all pass at once, turn after turn", () => {
  const turns = new HandTurns();
  const gate = new ArrivalGate(options, turns);
  for (let turn = 0; turn < 4; turn++) {
    assert.equal(arrive(gate, 3).passedAtOnce, 3);
    turns.endOfWork();
  }
  assert.equal(gate.waiting, 0);
  assert.equal(turns.laterQueue.length, 0, "no timer is asked for under a steady load");
});

Deno.test("ArrivalGate: a burst waits past perTurn and is let in a few per timer turn, in arrival order", async () => {
  const turns = new HandTurns();
  const gate = new ArrivalGate(options, turns);
  const burst = arrive(gate, 10);
  assert.equal(burst.passedAtOnce, 3);
  assert.equal(gate.waiting, 7);
  // A turn that only ran the work in hand lets nobody more in: the loop has not polled I/O.
  turns.endOfWork();
  assert.equal(arrive(gate, 1, 10).passedAtOnce, 0, "a newcomer queues behind the held ones");
  await turns.timerTurn(2);
  assert.deepEqual(burst.order, [0, 1, 2, 3, 4, 5, 6]);
  await turns.timerTurn(2);
  await turns.timerTurn(2);
  assert.deepEqual(burst.order, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal(gate.waiting, 0);
  // The burst is over: the next arrivals pass at once again.
  turns.endOfWork();
  assert.equal(arrive(gate, 2, 20).passedAtOnce, 2);
});

Deno.test("ArrivalGate: a late turn halves how many pass per turn, on-time turns add one back to the max", async () => {
  const turns = new HandTurns();
  const gate = new ArrivalGate(options, turns);
  arrive(gate, 40);
  await turns.timerTurn(2); // the quickest turn seen: the timer's own delay
  assert.equal(gate.perTurn, 4);
  await turns.timerTurn(2.5); // within lateMs of the quickest: on time
  assert.equal(gate.perTurn, 5);
  await turns.timerTurn(2);
  assert.equal(gate.perTurn, 5, "never past maxPerTurn");
  await turns.timerTurn(9); // the loop was busy for 7 ms beyond the timer
  assert.equal(gate.perTurn, 2);
  await turns.timerTurn(9);
  await turns.timerTurn(9);
  assert.equal(gate.perTurn, 1, "never below one: a burst always moves");
  const before = gate.waiting;
  await turns.timerTurn(2);
  assert.equal(gate.perTurn, 2);
  assert.equal(gate.waiting, before - 2);
});
