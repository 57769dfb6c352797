/**
 * Serving requests once a model is loaded: parallel workers, unbuffered streaming, bodies
 * passed through byte for byte, and every OpenAI-style POST route through the same queue.
 */
import assert from "node:assert/strict";
import { chatBody, getJson, post, queuedModels, SseReader } from "./support/client.ts";
import { requireDocker } from "./support/docker_env.ts";
import { createHomelab } from "./support/fake_models.ts";
import { startTestProxy, withHomelabProxy } from "./support/proxy.ts";
import { waitFor } from "./support/wait_for.ts";

Deno.test("two workers run two requests on one model at the same time", async () => {
  await withHomelabProxy([{ id: "a", slots: 2 }], "num_workers: 2", async ({ lab, proxy }) => {
    const first = post(proxy.url, chatBody("a", { fake_hold: true }));
    const second = post(proxy.url, chatBody("a", { fake_hold: true }));
    await waitFor("both requests in flight at the backend", async () => {
      return (await lab.state()).inflight === 2;
    });
    const metrics = (await getJson(`${proxy.url}/metrics`)).body;
    assert.equal(metrics.active_workers, 2);
    assert.equal(metrics.peak_concurrent_requests, 2);
    await lab.release();
    assert.equal((await first).status, 200);
    assert.equal((await second).status, 200);
  });
});

Deno.test("num_workers: 1 never sends a second request while one is in flight", async () => {
  await withHomelabProxy([{ id: "a", slots: 4 }], "num_workers: 1", async ({ lab, proxy }) => {
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
    const first = post(proxy.url, chatBody("a", { fake_hold: true }));
    const second = post(proxy.url, chatBody("a", { fake_hold: true }));
    await waitFor("one request held", async () => (await lab.state()).inflight === 1);
    await waitFor("the other queued", async () => {
      const stats = (await getJson(`${proxy.url}/metrics`)).body.queue_stats as Record<
        string,
        number
      >;
      return stats.pending_jobs === 1 && stats.processing_jobs === 1;
    });
    await lab.release();
    assert.equal((await first).status, 200);
    await waitFor("second request held", async () => (await lab.state()).inflight === 1);
    await lab.release();
    assert.equal((await second).status, 200);
    assert.equal((await lab.state()).max_inflight, 1);
  });
});

Deno.test("the first streamed chunk reaches the client before the backend produced the last", async () => {
  await withHomelabProxy([{ id: "a" }], "", async ({ lab, proxy }) => {
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200); // load the model first
    const res = await post(
      proxy.url,
      chatBody("a", { stream: true, fake_tokens: 5, fake_hold: true }),
    );
    assert.equal(res.status, 200);
    const sse = new SseReader(res);
    const events = [];
    // The look-alike holds after its first content chunk: these arrive while it waits.
    for (let i = 0; i < 2; i++) events.push(await sse.next());
    assert.match(events[1]!.data!, /"content":" Hello"/);
    const state = await lab.state();
    assert.equal(state.inflight, 1);
    assert.equal(state.completed, 1); // only the warm-up request has finished
    await lab.release();
    const rest = await sse.rest();
    assert.equal(rest.at(-1)!.data, "[DONE]");
    assert.equal(rest.filter((e) => e.data?.includes('"content"')).length, 4);
  });
});

Deno.test("an image content part and unknown fields reach the backend byte-identical", async () => {
  await withHomelabProxy([{ id: "a" }], "", async ({ lab, proxy }) => {
    const png = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(3000))));
    // Odd spacing, key order and unicode escapes: any re-serialisation would change it.
    const body =
      `{"messages" : [{"role":"user","content":[{"type":"text","text":"what is this? \\u00e9"},` +
      `{"type":"image_url","image_url":{"url":"data:image/png;base64,${png}"}}]}],` +
      `  "model":"a", "response_format":{"type":"json_object"},"tools":[],"frobnicate":1.50}`;
    const res = await post(proxy.url, body);
    assert.equal(res.status, 200);
    await res.body?.cancel();
    const chats = (await lab.state()).received.filter((r) => r.path === "/v1/chat/completions");
    assert.equal(chats.at(-1)!.body, body);
  });
});

Deno.test("completions, embeddings, rerank and messages go through the same queue", async () => {
  await withHomelabProxy([{ id: "a" }], "", async ({ lab, proxy }) => {
    const completion = await post(proxy.url, { model: "a", prompt: "Once" }, {
      path: "/v1/completions",
    });
    assert.equal((await completion.json()).object, "text_completion");
    const embedding = await post(proxy.url, { model: "a", input: "hi" }, {
      path: "/v1/embeddings",
    });
    assert.equal((await embedding.json()).data[0].object, "embedding");
    const rerank = await post(proxy.url, { model: "a", query: "q", documents: ["d"] }, {
      path: "/v1/rerank?top_n=1",
    });
    assert.equal(rerank.status, 200);
    await rerank.body?.cancel();
    const messages = await post(proxy.url, { model: "a", max_tokens: 5, messages: [] }, {
      path: "/v1/messages",
    });
    assert.equal(messages.status, 200);
    await messages.body?.cancel();
    const paths = (await lab.state()).received.map((r) => r.path).filter((p) => p !== "/health");
    assert.deepEqual(paths, [
      "/v1/completions",
      "/v1/embeddings",
      "/v1/rerank?top_n=1",
      "/v1/messages",
    ]);
    const metrics = (await getJson(`${proxy.url}/metrics`)).body;
    assert.equal(metrics.total_requests, 4);
    assert.equal(metrics.successful_requests, 4);
  });
});

Deno.test("GET /v1/models lists configured models in the seed's shape, saying which is loaded", async () => {
  const api = await requireDocker();
  try {
    await using lab = await createHomelab(api, [{ id: "a" }, { id: "b" }]);
    await using proxy = await startTestProxy(lab.configYaml());
    await proxy.reconciled;
    const list = await getJson(`${proxy.url}/v1/models`);
    assert.equal(list.body.object, "list");
    const data = list.body.data as Record<string, unknown>[];
    assert.deepEqual(data.map((m) => m.id), ["a", "b"]);
    for (const entry of data) {
      assert.deepEqual(
        Object.keys(entry).sort(),
        ["created", "id", "kv_cache", "loaded", "object", "owned_by", "state"],
      );
      assert.equal(entry.object, "model");
      assert.equal(entry.owned_by, "local");
      assert.equal(entry.loaded, false);
      assert.equal(entry.state, "stopped");
    }
    assert.equal((await post(proxy.url, chatBody("b"))).status, 200);
    const one = await getJson(`${proxy.url}/v1/models/b`);
    assert.equal(one.body.id, "b");
    assert.equal(one.body.loaded, true);
    assert.equal(one.body.state, "loaded");
    const after = (await getJson(`${proxy.url}/v1/models`)).body.data as Record<string, unknown>[];
    assert.deepEqual(after.map((m) => [m.id, m.state]), [["a", "stopped"], ["b", "loaded"]]);
    const missing = await getJson(`${proxy.url}/v1/models/zzz`);
    assert.equal(missing.status, 404);
    assert.equal((missing.body.error as Record<string, unknown>).code, "model_not_found");
    await proxy.reconciled;
  } finally {
    api.close();
  }
});

Deno.test("X-Priority: interactive requests go before batch ones waiting for the same model", async () => {
  await withHomelabProxy([{ id: "a" }], "num_workers: 1", async ({ lab, proxy }) => {
    const held = post(proxy.url, chatBody("a", { fake_hold: true }));
    await waitFor("worker busy", async () => (await lab.state()).inflight === 1);
    const send = (marker: string, priority: string) =>
      fetch(`${proxy.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-priority": priority },
        body: JSON.stringify(chatBody("a", { marker })),
      });
    const batch = send("batch-1", "batch");
    await waitFor("batch queued", async () => (await queuedModels(proxy.url)).length === 1);
    const chat = send("chat-1", "interactive");
    await waitFor("chat queued", async () => (await queuedModels(proxy.url)).length === 2);
    await lab.release();
    for (const res of [await held, await batch, await chat]) assert.equal(res.status, 200);
    const order = (await lab.state()).received.map((r) => /"marker":"([^"]+)"/.exec(r.body)?.[1])
      .filter(Boolean);
    assert.deepEqual(order, ["chat-1", "batch-1"]);
  });
});
