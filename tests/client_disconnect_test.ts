/**
 * A client that leaves is noticed whatever client it is: Python `openai`, `httpx` and
 * `aiohttp`, the Node `openai` client, Deno's fetch and curl each give up on a request 5, 50
 * and 500 ms after sending it, while it is queued, while its model loads, and mid-answer
 * (streaming and not). Queued or loading: it never reaches a backend. Mid-answer: the backend
 * sees the disconnect and the worker is free again. Every request the proxy received is
 * counted: `cancelled_requests` and `lqp_requests_total{status="499"}` agree.
 */
import assert from "node:assert/strict";
import { chatBody, getJson, post } from "./support/client.ts";
import { type Counts, countsOf, unfinished } from "./support/request_counts.ts";
import {
  CancellingClients,
  type CancelResult,
  type ClientName,
  CLIENTS,
} from "./support/cancelling_clients.ts";
import { withHomelabProxy } from "./support/proxy.ts";
import { waitFor } from "./support/wait_for.ts";

const CANCEL_AFTER_MS = [5, 50, 500];

/** Each client at each moment, with a marker in its body to find it at the backend. */
function* scenarios(moment: string): Generator<{ client: ClientName; ms: number; marker: string }> {
  for (const client of CLIENTS) {
    for (const ms of CANCEL_AFTER_MS) yield { client, ms, marker: `${moment}-${client}-${ms}ms` };
  }
}

/** The client really gave up (the scenario would prove nothing if the answer came first). */
function assertCancelled(result: CancelResult, what: string): void {
  assert.equal(
    result.outcome,
    "cancelled",
    `${what}: ended before the cancel: ${JSON.stringify(result)}`,
  );
}

/**
 * What a cancel must leave behind: the request (if it reached the proxy; at 5 ms it may not
 * have) is counted once as cancelled, and the 499 series says the same.
 */
function assertCounted(before: Counts, after: Counts, ms: number, what: string): void {
  const received = after.total - before.total;
  if (ms >= 50) assert.equal(received, 1, `${what}: the proxy should have received it`);
  assert.equal(after.cancelled - before.cancelled, received, `${what}: counted as cancelled`);
  assert.equal(after.logged499, after.cancelled, `${what}: lqp_requests_total{status="499"}`);
}

Deno.test("cancel while queued, every client at 5/50/500 ms: never reaches the backend, counted as 499", async () => {
  await using clients = await CancellingClients.start();
  await withHomelabProxy([{ id: "a" }], "num_workers: 1", async ({ lab, proxy }) => {
    const held = post(proxy.url, chatBody("a", { fake_hold: true }));
    await waitFor("the held request to occupy the only worker", async () => {
      return (await lab.state()).inflight === 1;
    });
    for (const { client, ms, marker } of scenarios("queued")) {
      const before = await countsOf(proxy.url);
      // Streaming requests get their SSE response while queued; most clients wait without.
      const body = chatBody("a", { marker, stream: ms === 50 });
      assertCancelled(await clients.send(client, proxy.url, body, ms), marker);
      const after = await waitFor(`${marker} to leave the queue`, async () => {
        const now = await countsOf(proxy.url);
        return now.pending === 0 && unfinished(now) === 1 ? now : null;
      });
      assertCounted(before, after, ms, marker);
    }
    assert.equal(await lab.release(), 1);
    assert.equal((await held).status, 200);
    const seen = (await lab.state()).received.map((r) => r.body).join("\n");
    for (const { marker } of scenarios("queued")) {
      assert.ok(!seen.includes(`"${marker}"`), `${marker} reached the backend`);
    }
  });
});

Deno.test("cancel while its model loads, every client at 5/50/500 ms: no request reaches the model", async () => {
  await using clients = await CancellingClients.start();
  await withHomelabProxy(
    [{ id: "a", loadMs: 900 }, { id: "b", loadMs: 900 }],
    "num_workers: 1",
    async ({ lab, proxy }) => {
      for (const { client, ms, marker } of scenarios("loading")) {
        const loaded = (await getJson(`${proxy.url}/health`)).body.current_model;
        const target = loaded === "a" ? "b" : "a";
        const before = await countsOf(proxy.url);
        const body = chatBody(target, { marker, stream: ms === 50 });
        assertCancelled(await clients.send(client, proxy.url, body, ms), marker);
        // The swap it started may finish; nothing may be sent to the model afterwards.
        const after = await waitFor(`${marker}: the proxy idle again`, async () => {
          const now = await countsOf(proxy.url);
          const snap = proxy.models.snapshot();
          const settled = snap.phase === "ready" || snap.phase === "idle";
          return settled && now.pending === 0 && unfinished(now) === 0 ? now : null;
        });
        assertCounted(before, after, ms, marker);
        if ((await lab.running()).includes(lab.containerOf(target))) {
          const chats = (await lab.state()).received.filter((r) => r.path.includes("/chat/"));
          assert.deepEqual(chats.map((r) => r.body), [], `${marker}: the model got a request`);
        }
      }
    },
  );
});

for (const stream of [true, false]) {
  const moment = stream ? "mid-stream" : "mid-answer";
  Deno.test(`cancel ${moment} (${stream ? "streaming" : "non-streaming"}), every client at 5/50/500 ms: the backend sees the disconnect`, async () => {
    await using clients = await CancellingClients.start();
    await withHomelabProxy([{ id: "a" }], "num_workers: 1", async ({ lab, proxy }) => {
      assert.equal((await post(proxy.url, chatBody("a"))).status, 200); // loaded
      for (const { client, ms, marker } of scenarios(moment)) {
        const before = await countsOf(proxy.url);
        const backendBefore = await lab.state();
        // Held: a stream stops after its first chunk, a JSON answer never comes.
        const body = chatBody("a", { marker, stream, fake_hold: true });
        assertCancelled(await clients.send(client, proxy.url, body, ms), marker);
        const after = await waitFor(`${marker}: the worker free again`, async () => {
          const now = await countsOf(proxy.url);
          return now.active === 0 && unfinished(now) === 0 ? now : null;
        });
        assertCounted(before, after, ms, marker);
        const backend = await waitFor(`${marker}: the backend to see the disconnect`, async () => {
          const state = await lab.state();
          return state.inflight === 0 ? state : null;
        });
        const reached = backend.received.some((r) => r.body.includes(`"${marker}"`));
        assert.equal(backend.completed, backendBefore.completed, `${marker}: ran to the end`);
        assert.equal(
          backend.disconnects - backendBefore.disconnects,
          reached ? 1 : 0,
          `${marker}: disconnects seen by the backend`,
        );
      }
    });
  });
}
