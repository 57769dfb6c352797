/**
 * Model swapping against a real dockerd: three look-alike containers share one host port,
 * as in the seed's homelab.
 */
import assert from "node:assert/strict";
import { chatBody, getJson, post, queuedModels } from "./support/client.ts";
import { containerStarts, followRunning, requireDocker } from "./support/docker_env.ts";
import { createHomelab } from "./support/fake_models.ts";
import { startTestProxy, withHomelabProxy } from "./support/proxy.ts";
import { waitFor } from "./support/wait_for.ts";

async function startedAt(api: Awaited<ReturnType<typeof requireDocker>>, name: string) {
  const res = await api.call("GET", `/containers/${name}/json`);
  return (await res.json()).State.StartedAt as string;
}

Deno.test("cold start: the first request starts its container and is answered once healthy", async () => {
  await withHomelabProxy([{ id: "a", loadMs: 400 }, { id: "b" }], "", async ({ lab, proxy }) => {
    assert.deepEqual(await lab.running(), []);

    const res = await post(proxy.url, chatBody("a"));
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.object, "chat.completion");
    assert.equal(body.model, "a");
    assert.deepEqual(await lab.running(), [lab.containerOf("a")]);
    // Zero early forwarding: the look-alike saw no chat request while it was loading.
    const state = await lab.state();
    const chats = state.received.filter((r) => r.path === "/v1/chat/completions");
    assert.equal(chats.length, 1);

    const health = await getJson(`${proxy.url}/health`);
    assert.equal(health.body.current_model, "a");
  });
});

Deno.test("same model again: served by the running container, no restart", async () => {
  await withHomelabProxy([{ id: "a" }, { id: "b" }], "", async ({ api, lab, proxy }) => {
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
    const first = await startedAt(api, lab.containerOf("a"));
    const again = await post(proxy.url, chatBody("a", { stream: true }));
    assert.equal(again.status, 200);
    await again.text();
    assert.equal(await startedAt(api, lab.containerOf("a")), first);
    assert.equal((await lab.state()).completed, 2);
  });
});

Deno.test("A→B→A: never two model containers running at any of Docker's start or die events", async () => {
  const api = await requireDocker();
  try {
    // Own ports, so Docker's "port is already allocated" cannot hide a proxy bug.
    await using lab = await createHomelab(api, [
      { id: "a", ownPort: true },
      { id: "b", ownPort: true },
      { id: "c", ownPort: true },
    ]);
    await using proxy = await startTestProxy(lab.configYaml());
    await proxy.reconciled;
    const overlaps: string[] = [];
    const follower = await followRunning(api, lab, (running, { action, name }) => {
      if (running.size > 1) overlaps.push(`${action} ${name}: ${[...running].join(", ")}`);
    });
    let events = 0;
    try {
      for (const model of ["a", "b", "a"]) {
        const res = await post(proxy.url, chatBody(model));
        // The body says why, should a swap ever fail here.
        assert.equal(res.status, 200, `${model}: ${await res.clone().text()}`);
        assert.equal((await res.json()).model, model);
        assert.deepEqual(await lab.running(), [lab.containerOf(model)]);
      }
    } finally {
      events = await follower.stop();
    }
    // a starts; b: a dies, b starts; a: b dies, a starts.
    assert.ok(events >= 5, `only ${events} container events were seen`);
    assert.deepEqual(overlaps, []);
  } finally {
    api.close();
  }
});

Deno.test("start-up reconcile: with two model containers running, all but one are stopped", async () => {
  const api = await requireDocker();
  try {
    await using lab = await createHomelab(api, [
      { id: "a", ownPort: true },
      { id: "b", ownPort: true },
      { id: "c" },
    ]);
    await lab.start("a");
    await lab.start("b"); // started last, so the proxy keeps it
    assert.equal((await lab.running()).length, 2);

    await using proxy = await startTestProxy(lab.configYaml());
    await proxy.reconciled;
    assert.deepEqual(await lab.running(), [lab.containerOf("b")]);
    assert.equal((await getJson(`${proxy.url}/health`)).body.current_model, "b");
    // The adopted model serves without a swap.
    const res = await post(proxy.url, chatBody("b"));
    assert.equal(res.status, 200);
    assert.equal((await lab.state("b")).completed, 1);
  } finally {
    api.close();
  }
});

Deno.test("a streaming client waiting for a swap gets SSE comments, then the answer", async () => {
  await withHomelabProxy(
    [{ id: "a", loadMs: 1500 }],
    "keepalive_interval: 0.2",
    async ({ proxy }) => {
      const res = await post(proxy.url, chatBody("a", { stream: true }));
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("content-type"), "text/event-stream");
      assert.equal(res.headers.get("x-queue-position"), "1");
      assert.match(res.headers.get("x-queue-eta") ?? "", /^\d+$/);
      const text = await res.text();
      const comments = text.split("\n").filter((l) => l.startsWith(": "));
      assert.ok(
        comments.some((c) => /^: loading model a \d+s position=1 eta=\d+s$/.test(c)),
        `no loading comment in:\n${text}`,
      );
      assert.ok(text.indexOf(": loading") < text.indexOf("data: "));
      assert.match(text, /data: \[DONE\]\n\n$/);
    },
  );
});

Deno.test("a swap waits for the in-flight request on the old model, then serves B", async () => {
  await withHomelabProxy([{ id: "a" }, { id: "b" }], "", async ({ lab, proxy }) => {
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
    const held = post(proxy.url, chatBody("a", { fake_hold: true }));
    await waitFor("held request in flight", async () => (await lab.state()).inflight === 1);
    const b = post(proxy.url, chatBody("b"));
    await waitFor("b queued", async () => {
      const metrics = (await getJson(`${proxy.url}/metrics`)).body;
      return (metrics.queue_stats as { pending_jobs: number }).pending_jobs === 1;
    });
    // The swap waits for A's request: A is still the only running container.
    assert.deepEqual(await lab.running(), [lab.containerOf("a")]);
    await lab.release();
    assert.equal((await held).status, 200);
    const bRes = await b;
    assert.equal(bRes.status, 200);
    assert.equal((await bRes.json()).model, "b");
  });
});

Deno.test("one worker, A,B,A,B,A,B queued while A is loaded: at most two swaps, seen in Docker's events", async () => {
  await withHomelabProxy(
    [{ id: "a" }, { id: "b" }],
    "num_workers: 1",
    async ({ api, lab, proxy }) => {
      assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
      const since = Date.now();
      const held = post(proxy.url, chatBody("a", { fake_hold: true }));
      await waitFor("worker busy", async () => (await lab.state()).inflight === 1);
      const answers = [];
      for (const [i, model] of ["a", "b", "a", "b", "a", "b"].entries()) {
        answers.push(post(proxy.url, chatBody(model)));
        await waitFor(`request ${i + 1} queued`, async () => {
          return (await queuedModels(proxy.url)).length === i + 1;
        });
      }
      assert.deepEqual(await queuedModels(proxy.url), ["a", "b", "a", "b", "a", "b"]);
      await lab.release();
      assert.equal((await held).status, 200);
      const models = await Promise.all(answers.map(async (r) => (await (await r).json()).model));
      assert.deepEqual(models, ["a", "b", "a", "b", "a", "b"]); // every request answered

      // Container starts since the queue formed, from the Engine's own event log.
      const starts = await containerStarts(api, lab.prefix, since);
      assert.ok(starts.length >= 1 && starts.length <= 2, `${starts.length} swaps`);
      assert.equal(starts[0], lab.containerOf("b"));
    },
  );
});

Deno.test("idle ttl unloads a model nobody used for that long; preload loads one at start-up", async () => {
  await withHomelabProxy(
    [{ id: "a", ttlS: 1 }, { id: "b" }],
    "preload: b",
    async ({ lab, proxy }) => {
      // preload: b is up before any request.
      assert.deepEqual(await lab.running(), [lab.containerOf("b")]);
      assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
      assert.deepEqual(await lab.running(), [lab.containerOf("a")]);
      await waitFor(
        "a to be unloaded after its ttl",
        async () => (await lab.running()).length === 0,
      );
      assert.equal((await getJson(`${proxy.url}/health`)).body.current_model, null);
      assert.equal((await post(proxy.url, chatBody("a"))).status, 200); // and it comes back
    },
  );
});
