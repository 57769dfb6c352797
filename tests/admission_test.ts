/**
 * What the proxy refuses before anything is queued, each in the OpenAI error shape, and the
 * queue limit with its Retry-After.
 */
import assert from "node:assert/strict";
import { chatBody, getJson, post } from "./support/client.ts";
import { withHomelabProxy } from "./support/proxy.ts";
import { waitFor } from "./support/wait_for.ts";

async function expectError(res: Response, status: number, code: string) {
  assert.equal(res.status, status);
  assert.match(res.headers.get("content-type") ?? "", /application\/json/);
  const body = await res.json();
  assert.deepEqual(Object.keys(body), ["error"]);
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
  assert.equal(body.error.code, code);
  assert.match(res.headers.get("x-request-id") ?? "", /^req_[0-9a-f]{24}$/);
  return body.error as { message: string; type: string; param: string | null; code: string };
}

Deno.test("queue full: 429 with Retry-After and the seed's message; nothing is lost", async () => {
  await withHomelabProxy([{ id: "a" }], "num_workers: 1\nqueue_size: 1", async ({ lab, proxy }) => {
    const running = post(proxy.url, chatBody("a", { fake_hold: true }));
    await waitFor("first request held", async () => (await lab.state()).inflight === 1);
    const waiting = post(proxy.url, chatBody("a"));
    await waitFor("second request queued", async () => {
      return (await getJson(`${proxy.url}/health`)).body.queue_size === 1;
    });
    const rejected = await post(proxy.url, chatBody("a"));
    const error = await expectError(rejected, 429, "queue_full");
    assert.equal(error.message, "Queue full (1 requests). Try again later.");
    assert.match(rejected.headers.get("retry-after") ?? "", /^\d+$/);
    await lab.release();
    assert.equal((await running).status, 200);
    assert.equal((await waiting).status, 200);
  });
});

Deno.test("bad requests are refused with 400/404/413 before they are queued", async () => {
  await withHomelabProxy(
    [{ id: "a" }, { id: "b" }],
    "max_body_size: 4kb",
    async ({ lab, proxy }) => {
      const malformed = await expectError(
        await post(proxy.url, '{"model":"a","messages":[{"role":"user"'),
        400,
        "invalid_json",
      );
      assert.equal(malformed.type, "invalid_request_error");

      const noModel = await expectError(
        await post(proxy.url, { messages: [] }),
        400,
        "missing_model",
      );
      assert.equal(noModel.param, "model");

      const unknown = await expectError(
        await post(proxy.url, chatBody("gpt-5")),
        404,
        "model_not_found",
      );
      assert.match(unknown.message, /'gpt-5' does not exist\. Valid models: a, b/);

      const huge = chatBody("a", { padding: "x".repeat(5000) });
      await expectError(await post(proxy.url, huge), 413, "request_too_large");

      await expectError(await fetch(`${proxy.url}/v1/nothing-here`), 404, "not_found");

      const badPriority = await fetch(`${proxy.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "x-priority": "urgent" },
        body: JSON.stringify(chatBody("a")),
      });
      const priorityError = await expectError(badPriority, 400, "invalid_priority");
      assert.match(priorityError.message, /interactive, batch/);

      const stats = (await getJson(`${proxy.url}/metrics`)).body;
      assert.equal(stats.total_requests, 0);
      assert.deepEqual(await lab.running(), []); // nothing was started for them
    },
  );
});

Deno.test("max_queue_share: a key holding its share of the queue gets 429 with Retry-After; another key still gets in", async () => {
  const keys = [
    "api_keys:",
    "  - { name: script, key: sk-script-0123456789abcd }",
    "  - { name: family, key: sk-family-0123456789abcd }",
  ].join("\n");
  await withHomelabProxy(
    [{ id: "a" }],
    `num_workers: 1\nqueue_size: 4\nmax_queue_share: 0.5\n${keys}`,
    async ({ lab, proxy }) => {
      const send = (key: string, extra: Record<string, unknown> = {}) =>
        fetch(`${proxy.url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
          body: JSON.stringify(chatBody("a", extra)),
        });
      const queued = async () => (await getJson(`${proxy.url}/health`)).body.queue_size;
      // Running requests hold no queue place: the script's share (2 of 4) is for waiting ones.
      const running = send("sk-script-0123456789abcd", { fake_hold: true });
      await waitFor(
        "the first request at the model",
        async () => (await lab.state()).inflight === 1,
      );
      const waiting = [send("sk-script-0123456789abcd"), send("sk-script-0123456789abcd")];
      await waitFor("the script's two requests queued", async () => await queued() === 2);

      const refused = await send("sk-script-0123456789abcd");
      const error = await expectError(refused, 429, "queue_share_exceeded");
      assert.equal(error.type, "rate_limit_error");
      assert.match(error.message, /Key 'script' already holds 2 of the 4 queue places/);
      assert.match(refused.headers.get("retry-after") ?? "", /^[1-9]\d*$/);

      const family = send("sk-family-0123456789abcd");
      await waitFor("the other key's request queued", async () => await queued() === 3);
      await lab.release();
      for (const res of [await running, ...await Promise.all(waiting), await family]) {
        assert.equal(res.status, 200);
        await res.body?.cancel();
      }
    },
  );
});
