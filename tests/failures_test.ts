/**
 * Models that will not come up, containers that do not exist, a Docker that is not there:
 * each gives waiting clients a clear 503 and leaves nothing running.
 */
import assert from "node:assert/strict";
import { chatBody, getJson, post, SseReader } from "./support/client.ts";
import { requireDocker } from "./support/docker_env.ts";
import { createHomelab } from "./support/fake_models.ts";
import { CapturedLog } from "./support/log_capture.ts";
import { startTestProxy, withHomelabProxy } from "./support/proxy.ts";
import { waitFor, within } from "./support/wait_for.ts";

Deno.test("startup_timeout: a model that never gets healthy fails with its log tail, and is stopped", async () => {
  await withHomelabProxy(
    [
      { id: "stuck", mode: "never", startupTimeoutS: 1 },
      { id: "ok" },
    ],
    "",
    async ({ lab, proxy }) => {
      const [first, second] = await Promise.all([
        post(proxy.url, chatBody("stuck")),
        post(proxy.url, chatBody("stuck")),
      ]);
      for (const res of [first, second]) {
        assert.equal(res.status, 503);
        const { error } = await res.json();
        assert.equal(error.code, "model_load_failed");
        assert.match(error.message, /did not become healthy within startup_timeout \(1s\)/);
        assert.match(error.message, /Loading model/);
        assert.match(error.message, /load_model: loading model/); // from the container's log
      }
      assert.deepEqual(await lab.running(), []);
      // The next model is served.
      assert.equal((await post(proxy.url, chatBody("ok"))).status, 200);
    },
  );
});

Deno.test("a container that exits while starting fails at once with its exit code and log", async () => {
  const api = await requireDocker();
  try {
    // A long startup_timeout: only watching the container's state can end this quickly.
    await using lab = await createHomelab(api, [{
      id: "broken",
      mode: "exit",
      startupTimeoutS: 600,
    }]);
    await using proxy = await startTestProxy(lab.configYaml());
    await proxy.reconciled;
    const res = await post(proxy.url, chatBody("broken", { stream: true }));
    const text = await res.text();
    const error = JSON.parse(text.split("\n").find((l) => l.startsWith("data: "))!.slice(6)).error;
    assert.equal(error.code, "model_load_failed");
    assert.match(error.message, /exited with exit code 1/);
    assert.match(error.message, /error loading model: tensor 'output\.weight'/);
    assert.deepEqual(await lab.running(), []);
  } finally {
    api.close();
  }
});

Deno.test("a missing container: 503 'Container not found: NAME', and the loaded model stays", async () => {
  await withHomelabProxy(
    [{ id: "ghost", missing: true }, { id: "a" }],
    "",
    async ({ lab, proxy }) => {
      assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
      const res = await post(proxy.url, chatBody("ghost"));
      assert.equal(res.status, 503);
      const { error } = await res.json();
      assert.equal(error.code, "container_not_found");
      assert.match(error.message, new RegExp(`^Container not found: ${lab.containerOf("ghost")}`));
      // The loaded model was not stopped for a container that does not exist.
      assert.deepEqual(await lab.running(), [lab.containerOf("a")]);
      const health = await getJson(`${proxy.url}/health`);
      assert.equal(health.status, 200);
      assert.equal(health.body.current_model, "a");
      assert.match(
        String(health.body.message),
        new RegExp(`missing containers: ${lab.containerOf("ghost")}`),
      );
    },
  );
});

Deno.test("Docker unreachable: /health answers 503 and requests get a clear 503", async () => {
  const socket = `/tmp/lqp-no-docker-${crypto.randomUUID()}.sock`;
  const config = `host: 127.0.0.1
port: 0
models:
  a:
    container_name: some-container
    backend_url: http://127.0.0.1:9/v1
`;
  await using proxy = await startTestProxy(config, { dockerSocket: socket });
  await proxy.reconciled;
  const health = await getJson(`${proxy.url}/health`);
  assert.equal(health.status, 503);
  assert.equal(health.body.status, "unhealthy");
  assert.match(String(health.body.message), /Docker is unreachable at \/tmp\/lqp-no-docker/);
  assert.deepEqual(
    Object.keys(health.body).sort(),
    ["current_model", "message", "queue_capacity", "queue_size", "resident_models", "status"],
  );
  const res = await post(proxy.url, chatBody("a"));
  assert.equal(res.status, 503);
  const { error } = await res.json();
  assert.equal(error.code, "docker_unavailable");
  assert.match(error.message, /is dockerd running\?/);
});

Deno.test("a backend stopped by hand is restarted by the next request, which still succeeds", async () => {
  await withHomelabProxy([{ id: "a" }], "", async ({ api, lab, proxy }) => {
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
    await (await api.call("POST", `/containers/${lab.containerOf("a")}/stop?t=0`)).body?.cancel();
    assert.deepEqual(await lab.running(), []);

    const res = await post(proxy.url, chatBody("a"));
    assert.equal(res.status, 200);
    assert.equal((await res.json()).model, "a");
    assert.deepEqual(await lab.running(), [lab.containerOf("a")]);
    const metrics = (await getJson(`${proxy.url}/metrics`)).body;
    assert.equal(metrics.successful_requests, 2);
    assert.equal(metrics.failed_requests, 0);
  });
});

Deno.test("backend killed mid-stream: a final SSE error event, the worker freed, the next request restarts it", async () => {
  await withHomelabProxy([{ id: "a" }], "num_workers: 1", async ({ lab, proxy }) => {
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
    const res = await post(proxy.url, chatBody("a", { stream: true, fake_hold: true }));
    const sse = new SseReader(res);
    await sse.next();
    await sse.next(); // mid-generation now
    await lab.kill(lab.containerOf("a"));
    const rest = await sse.rest();
    const last = JSON.parse(rest.at(-1)!.data!);
    assert.equal(last.error.code, "upstream_stream_broken");
    const metrics = await (await fetch(`${proxy.url}/metrics`)).json();
    assert.equal(metrics.active_workers, 0);
    const again = await post(proxy.url, chatBody("a"));
    assert.equal(again.status, 200);
    assert.deepEqual(await lab.running(), [lab.containerOf("a")]);
  });
});

Deno.test("a model container started by hand while another is loaded is stopped again", async () => {
  await withHomelabProxy(
    [{ id: "a", ownPort: true }, { id: "b", ownPort: true }],
    "",
    async ({ lab, proxy }) => {
      assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
      await lab.start("b"); // someone runs `docker start` by hand
      await waitFor("the proxy to stop b again", async () => {
        const running = await lab.running();
        return running.length === 1 && running[0] === lab.containerOf("a");
      });
      assert.equal((await getJson(`${proxy.url}/health`)).body.current_model, "a");
      assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
    },
  );
});

Deno.test("a loaded container stopped by hand is noticed at once from Docker's events", async () => {
  await withHomelabProxy([{ id: "a" }], "", async ({ api, lab, proxy }) => {
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
    await (await api.call("POST", `/containers/${lab.containerOf("a")}/stop?t=0`)).body?.cancel();
    await waitFor("the proxy to forget model a", async () => {
      return (await getJson(`${proxy.url}/health`)).body.current_model === null;
    });
  });
});

Deno.test("a backend that dies before its first byte: the request is retried on a restarted model", async () => {
  await withHomelabProxy([{ id: "a" }], "", async ({ lab, proxy }) => {
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
    const res = await post(proxy.url, chatBody("a", { fake_crash_once: true }));
    assert.equal(res.status, 200);
    assert.equal((await res.json()).object, "chat.completion");
    // The restarted look-alike saw the retry; the first attempt died with the old process.
    const state = await lab.state();
    assert.equal(state.received.filter((r) => r.body.includes("fake_crash_once")).length, 1);
    const metrics = (await getJson(`${proxy.url}/metrics`)).body;
    assert.equal(metrics.successful_requests, 2);
    assert.equal(metrics.failed_requests, 0);
  });
});

Deno.test("a backend that dies on every attempt: 502 after max_attempts, counted as a dead letter", async () => {
  await withHomelabProxy([{ id: "a" }], "max_attempts: 2", async ({ proxy }) => {
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
    const res = await post(proxy.url, chatBody("a", { fake_crash: true }));
    assert.equal(res.status, 502);
    const { error } = await res.json();
    assert.equal(error.code, "upstream_unreachable");
    assert.match(error.message, /after 2 attempts/);
    await proxy.storeSettled(); // the store's records follow the answer by a few ms
    const metrics = (await getJson(`${proxy.url}/metrics`)).body;
    assert.equal((metrics.queue_stats as Record<string, number>).dead_letter_queue, 1);
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200); // and it recovers
  });
});

Deno.test("a streaming request whose backend dies before its first byte gets one complete stream from the retry", async () => {
  const log = new CapturedLog();
  await withHomelabProxy(
    [{ id: "a" }],
    "max_attempts: 2\nkeepalive_interval: 0.2",
    async ({ proxy }) => {
      // a is not loaded yet: the client's stream opens at once with waiting notes, so bytes
      // have gone out before the backend dies.
      const res = await post(proxy.url, chatBody("a", { stream: true, fake_crash_once: true }));
      assert.equal(res.status, 200);
      const events = await within("the retried stream to end", new SseReader(res).rest());
      assert.ok(events[0].comment !== undefined, "the stream began with a waiting note");
      const data = events.filter((e) => e.data !== undefined).map((e) => e.data!);
      assert.equal(data.at(-1), "[DONE]");
      const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
      assert.ok(chunks.every((c) => c.error === undefined), "no error event");
      // One backend answer: one id, one role chunk, the content once, one finish.
      assert.equal(new Set(chunks.map((c) => c.id)).size, 1);
      const deltas = chunks.map((c) => c.choices[0]);
      assert.equal(deltas.filter((d) => d.delta.role === "assistant").length, 1);
      assert.equal(deltas.map((d) => d.delta.content ?? "").join(""), " Hello from the fake");
      assert.deepEqual(deltas.map((d) => d.finish_reason).filter((f) => f !== null), ["length"]);
      assert.equal(data.filter((d) => d === "[DONE]").length, 1);

      assert.deepEqual(log.of("retry").map((e) => e.fields.attempt), [1]);
      const line = log.of("request").at(-1)!.fields;
      assert.equal(line.status, 200);
      assert.equal(line.attempts, 2);
    },
    { log },
  );
});
