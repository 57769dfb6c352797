/** Deadlines on one shared timer: request_timeout for every request. */
import assert from "node:assert/strict";
import { Deadlines } from "../lib/deadlines.ts";

/** Resolves with when `fire` was called, once `ms` after now. */
function firedAt(deadlines: Deadlines, ms: number, log: string[], name: string) {
  const set = performance.now();
  return new Promise<number>((resolve) =>
    deadlines.after(ms, () => {
      log.push(name);
      resolve(performance.now() - set);
    })
  );
}

Deno.test("Deadlines: each fires once its time passed, never before; cancelled ones never", async () => {
  const deadlines = new Deadlines();
  const log: string[] = [];
  const cancelled = deadlines.after(20, () => log.push("cancelled"));
  const a = firedAt(deadlines, 30, log, "a");
  const b = firedAt(deadlines, 30, log, "b");
  cancelled();
  cancelled(); // twice: nothing more
  assert.ok(await a >= 30);
  assert.ok(await b >= 30);
  assert.deepEqual(log, ["a", "b"]);
});

Deno.test("Deadlines: a shorter duration set later fires first, and the longer still fires", async () => {
  const deadlines = new Deadlines();
  const log: string[] = [];
  const long = firedAt(deadlines, 80, log, "long");
  const short = firedAt(deadlines, 10, log, "short");
  assert.ok(await short >= 10);
  assert.deepEqual(log, ["short"]);
  assert.ok(await long >= 80);
  assert.deepEqual(log, ["short", "long"]);
});

Deno.test("Deadlines: one set after all were cancelled, or from a firing callback, still fires", async () => {
  const deadlines = new Deadlines();
  const log: string[] = [];
  deadlines.after(10, () => log.push("cancelled"))();
  // The first one's timer was left armed (unref'd); this one must not be lost to it.
  assert.ok(await firedAt(deadlines, 40, log, "later") >= 40);
  const chained = new Promise<number>((resolve) =>
    deadlines.after(5, () => {
      log.push("first");
      firedAt(deadlines, 15, log, "chained").then(resolve);
    })
  );
  assert.ok(await chained >= 15);
  assert.deepEqual(log, ["later", "first", "chained"]);
});
