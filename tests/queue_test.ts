import assert from "node:assert/strict";
import { ApiError } from "../lib/errors.ts";
import { JobQueue } from "../lib/queue.ts";
import { makeJob } from "./support/jobs.ts";

function queue(capacity: number, ownerShare = 1) {
  const events = { cancelled: 0, timedOut: 0, changes: 0 };
  const q = new JobQueue(capacity, {
    timeoutS: 600,
    retryAfterS: () => 7,
    ownerShare,
    hooks: {
      onCancelled: () => events.cancelled++,
      onTimedOut: () => events.timedOut++,
      onChange: () => events.changes++,
    },
  });
  return { q, events };
}

Deno.test("JobQueue.admit() rejects past queue_size with 429, Retry-After and the seed's message", () => {
  const { q } = queue(2);
  q.admit(makeJob("a").job);
  q.admit(makeJob("a").job);
  assert.throws(() => q.admit(makeJob("a").job), (err) => {
    assert.ok(err instanceof ApiError);
    assert.equal(err.status, 429);
    assert.equal(err.message, "Queue full (2 requests). Try again later.");
    assert.equal(err.headers["retry-after"], "7");
    return true;
  });
  assert.equal(q.size, 2);
});

Deno.test("JobQueue drops a waiting job whose client disconnects and counts it cancelled", async () => {
  const { q, events } = queue(5);
  const first = makeJob("a");
  const second = makeJob("a");
  q.admit(first.job);
  q.admit(second.job);
  first.disconnect();
  assert.equal(q.size, 1);
  assert.equal(q.positionOf(second.job), 1);
  assert.equal(first.job.state, "cancelled");
  assert.equal(events.cancelled, 1);
  const outcome = await first.job.outcome;
  assert.equal(outcome.kind, "error");
});

Deno.test("JobQueue answers a waiting job 504 when request_timeout passes", async () => {
  const { q, events } = queue(5);
  const t = makeJob("a");
  q.admit(t.job);
  t.expire();
  const outcome = await t.job.outcome;
  assert.equal(outcome.kind === "error" && outcome.error.status, 504);
  assert.equal(events.timedOut, 1);
  assert.equal(q.size, 0);
});

Deno.test("JobQueue.requeue() puts a retried job back in its arrival place", () => {
  const { q } = queue(5);
  const [a, b, c] = [makeJob("a").job, makeJob("a").job, makeJob("a").job];
  q.admit(a);
  q.admit(b);
  q.admit(c);
  q.take(a);
  a.transition("running");
  q.requeue(a);
  assert.deepEqual(q.list(), [a, b, c]);
  assert.equal(a.state, "queued");
});

Deno.test("JobQueue.failModel() fails only that model's jobs", async () => {
  const { q } = queue(5);
  const [a, b] = [makeJob("a").job, makeJob("b").job];
  q.admit(a);
  q.admit(b);
  const error = new ApiError(503, "model_load_failed", "no");
  assert.deepEqual(q.failModel("a", error), [a]);
  assert.deepEqual(q.list(), [b]);
  assert.deepEqual(await a.outcome, { kind: "error", error });
});

Deno.test("Job.transition() refuses moves outside the table", () => {
  const { job } = makeJob("a");
  job.transition("running");
  job.transition("done");
  assert.throws(() => job.transition("running"), /illegal state change done -> running/);
});

Deno.test("JobQueue.admit() keeps one API key to its share of the queue", () => {
  const { q } = queue(10, 0.3);
  for (let i = 0; i < 3; i++) q.admit(makeJob("a", { owner: "n8n" }).job);
  assert.throws(() => q.admit(makeJob("a", { owner: "n8n" }).job), (err) => {
    assert.ok(err instanceof ApiError);
    assert.equal(err.status, 429);
    assert.equal(err.code, "queue_share_exceeded");
    assert.match(err.message, /Key 'n8n' already holds 3 of the 10 queue places/);
    return true;
  });
  q.admit(makeJob("a", { owner: "family" }).job); // others still get in
  const first = q.list()[0];
  q.take(first); // a place of n8n's frees up
  q.admit(makeJob("a", { owner: "n8n" }).job);
  assert.equal(q.size, 4);
});
