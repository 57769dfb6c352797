/**
 * A burst of streams arriving at once, as an n8n loop or a benchmark sends them, in two waves
 * (the second while the first streams), with every real client giving up on a stream of its own
 * at a different moment meanwhile: Python `openai`, `httpx` and `aiohttp`, the Node `openai`
 * client, Deno's fetch and curl. A burst this size is let in a few per turn
 * (lib/arrival_gate.ts); none of it may be lost, reordered within a stream or left running.
 */
import assert from "node:assert/strict";
import { chatBody, pause, post, SseReader } from "./support/client.ts";
import { CancellingClients, type CancelResult, CLIENTS } from "./support/cancelling_clients.ts";
import { countsOf, unfinished } from "./support/request_counts.ts";
import { withHomelabProxy } from "./support/proxy.ts";
import { waitFor, within } from "./support/wait_for.ts";

const WAVES = [100, 60];
const TOKENS = 8;
/** When each client gives up on its stream, after sending it. */
const CANCEL_AFTER_MS = [5, 40, 120, 250, 400, 600];

/** One stream of the burst, read to its end: its status and content chunks, and whether it ended well. */
async function burstStream(url: string, marker: string) {
  const res = await post(url, chatBody("a", { stream: true, marker, fake_tokens: TOKENS }));
  const events = await new SseReader(res).rest();
  const data = events.filter((e) => e.data !== undefined).map((e) => e.data!);
  const content = data.filter((d) => d !== "[DONE]")
    .map((d) => JSON.parse(d).choices?.[0]?.delta?.content)
    .filter((c): c is string => typeof c === "string" && c !== "");
  return { status: res.status, content, done: data.at(-1) === "[DONE]" };
}

Deno.test("a burst of 160 streams in two waves, every client giving up on its own stream meanwhile: each other stream arrives whole, each cancel is counted, nothing is left running", async () => {
  await using clients = await CancellingClients.start();
  await withHomelabProxy(
    [{ id: "a", slots: 200, tokenMs: 25 }],
    "num_workers: 200",
    async ({ lab, proxy }) => {
      assert.equal((await post(proxy.url, chatBody("a"))).status, 200); // loaded
      const before = await countsOf(proxy.url);
      const backendBefore = await lab.state();

      const first = Array.from({ length: WAVES[0] }, (_, i) => burstStream(proxy.url, `w1-${i}`));
      // The clients' streams are long: each client gives up before its stream could end.
      const cancels = CLIENTS.map((client, i) => {
        const body = chatBody("a", { stream: true, marker: client, fake_tokens: 400 });
        return clients.send(client, proxy.url, body, CANCEL_AFTER_MS[i]);
      });
      // The second wave lands while the first streams.
      await pause(60);
      const second = Array.from({ length: WAVES[1] }, (_, i) => burstStream(proxy.url, `w2-${i}`));

      // A request the gate held and never let in would hang here: a failure, not a stall.
      const streams = await within(
        "every stream of the burst to end",
        Promise.all([...first, ...second]),
      );
      const expected = (await burstStream(proxy.url, "alone")).content;
      assert.equal(expected.length, TOKENS);
      streams.forEach((s, i) => {
        assert.equal(s.status, 200, `stream ${i}`);
        assert.ok(s.done, `stream ${i} ended without data: [DONE]`);
        assert.deepEqual(s.content, expected, `stream ${i}: its chunks, whole and in order`);
      });
      const results: CancelResult[] = await Promise.all(cancels);
      results.forEach((r, i) =>
        assert.equal(r.outcome, "cancelled", `${CLIENTS[i]}: ended first: ${JSON.stringify(r)}`)
      );

      const after = await waitFor("every request of the burst to end", async () => {
        const now = await countsOf(proxy.url);
        return now.active === 0 && now.pending === 0 && unfinished(now) === 0 ? now : null;
      });
      const burst = WAVES[0] + WAVES[1] + 1; // and the one sent alone
      const received = after.total - before.total;
      // A client that gave up 5 ms after sending may have left before the proxy read it.
      assert.ok(received >= burst + CLIENTS.length - 1, `received ${received}`);
      assert.equal(after.successful - before.successful, burst);
      assert.equal(after.cancelled - before.cancelled, received - burst, "each cancel counted");
      assert.equal(after.failed, before.failed, "nothing failed");

      const backend = await waitFor("the backend to have nothing in flight", async () => {
        const state = await lab.state();
        return state.inflight === 0 ? state : null;
      });
      assert.equal(
        backend.completed - backendBefore.completed,
        burst,
        "no cancelled stream ran on",
      );
    },
  );
});
