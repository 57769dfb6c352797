/**
 * Clients that leave and requests that run out of time: nothing reaches a backend for a
 * client that is gone, and the backend hears about a client that left mid-answer.
 */
import assert from "node:assert/strict";
import { chatBody, getJson, post, queuedModels, SseReader } from "./support/client.ts";
import { withHomelabProxy } from "./support/proxy.ts";
import { CapturedLog } from "./support/log_capture.ts";
import { waitFor, within } from "./support/wait_for.ts";

type Stats = { pending_jobs: number; processing_jobs: number };

/** Runs `leave` (the client goes) and waits until the proxy saw its connection close. */
async function leaveSeen(url: string, leave: () => unknown): Promise<void> {
  const openBefore = (await metricsOf(url)).connections.open;
  await leave();
  await waitFor(
    "the proxy to see the client's connection close",
    async () => (await metricsOf(url)).connections.open < openBefore,
  );
}

async function metricsOf(url: string) {
  return (await getJson(`${url}/metrics`)).body as Record<string, number> & {
    queue_stats: Stats;
    connections: { open: number };
  };
}

Deno.test("a client that leaves while queued is dropped: the backend never sees it", async () => {
  await withHomelabProxy([{ id: "a" }], "num_workers: 1", async ({ lab, proxy }) => {
    const held = post(proxy.url, chatBody("a", { fake_hold: true }));
    await waitFor("held request in flight", async () => (await lab.state()).inflight === 1);
    const client = new AbortController();
    const queued = post(proxy.url, chatBody("a", { marker: "never-forwarded" }), {
      signal: client.signal,
    });
    await waitFor("second request queued", async () => {
      return (await metricsOf(proxy.url)).queue_stats.pending_jobs === 1;
    });
    client.abort();
    await assert.rejects(queued);
    await waitFor("queued job dropped", async () => {
      const m = await metricsOf(proxy.url);
      return m.cancelled_requests === 1 && m.queue_stats.pending_jobs === 0;
    });
    await lab.release();
    assert.equal((await held).status, 200);
    const bodies = (await lab.state()).received.map((r) => r.body);
    assert.ok(!bodies.some((b) => b.includes("never-forwarded")));
  });
});

Deno.test("a client that leaves mid-stream aborts the backend request, frees the worker, and its request line says when and after how many chunks", async () => {
  const log = new CapturedLog();
  await withHomelabProxy([{ id: "a" }], "num_workers: 1", async ({ lab, proxy }) => {
    const res = await post(proxy.url, chatBody("a", { stream: true, fake_hold: true }));
    const sse = new SseReader(res);
    await sse.next();
    await sse.next(); // first content chunk: the backend is now mid-generation
    await sse.cancel();
    await waitFor("backend saw the disconnect", async () => (await lab.state()).disconnects === 1);
    await waitFor("worker released", async () => (await metricsOf(proxy.url)).active_workers === 0);
    assert.equal((await metricsOf(proxy.url)).cancelled_requests, 1);
    const line = log.of("request").at(-1)!.fields;
    assert.equal(line.status, 499);
    assert.ok(typeof line.client_left_ms === "number" && line.client_left_ms >= 0);
    assert.ok(typeof line.chunks === "number" && line.chunks >= 2, `chunks=${line.chunks}`);
    // The freed worker serves the next request.
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
  }, { log });
});

Deno.test("request_timeout: a stuck non-streaming request gets 504 and the backend is aborted", async () => {
  await withHomelabProxy([{ id: "a" }], "request_timeout: 1", async ({ lab, proxy }) => {
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200); // load it
    const res = await post(proxy.url, chatBody("a", { fake_hold: true }));
    assert.equal(res.status, 504);
    const body = await res.json();
    assert.equal(body.error.code, "request_timeout");
    assert.equal(body.error.type, "timeout_error");
    await waitFor("backend saw the abort", async () => (await lab.state()).disconnects === 1);
    assert.equal((await metricsOf(proxy.url)).failed_requests, 1);
  });
});

Deno.test("request_timeout once streaming began: a final SSE error event ends the stream", async () => {
  await withHomelabProxy([{ id: "a" }], "request_timeout: 1", async ({ lab, proxy }) => {
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
    const res = await post(proxy.url, chatBody("a", { stream: true, fake_hold: true }));
    assert.equal(res.status, 200);
    // Guarded: this wait once hung in a full run (not reproduced since); fail, never hang.
    const events = await within("the timed-out stream to end", new SseReader(res).rest());
    const last = JSON.parse(events.at(-1)!.data!);
    assert.equal(last.error.code, "request_timeout");
    assert.ok(events.some((e) => e.data?.includes('"content":" Hello"')));
    await waitFor("backend saw the abort", async () => (await lab.state()).disconnects === 1);
  });
});

Deno.test("request_timeout across a queue wait and a swap: 504 for a plain request, a final SSE event for a stream, and nothing reaches the model it waited for", async () => {
  const log = new CapturedLog();
  await withHomelabProxy(
    [{ id: "a" }, { id: "b", loadMs: 3500 }],
    "num_workers: 1\nrequest_timeout: 2.5",
    async ({ lab, proxy }) => {
      assert.equal((await post(proxy.url, chatBody("a"))).status, 200); // load a
      const held = post(proxy.url, chatBody("a", { fake_hold: true }));
      await waitFor("a's worker busy", async () => (await lab.state()).inflight === 1);
      const stream = post(proxy.url, chatBody("b", { stream: true, marker: "never-forwarded" }));
      const plain = post(proxy.url, chatBody("b", { marker: "never-forwarded" }));
      await waitFor("both b requests queued behind a", async () => {
        return (await queuedModels(proxy.url)).join() === "b,b";
      });
      await lab.release();
      assert.equal((await held).status, 200);
      // Their time runs out while b loads (3.5 s), not while they still wait for a.
      await waitFor("b to load while its requests still wait", async () => {
        const models = (await getJson(`${proxy.url}/v1/models`)).body.data as {
          id: string;
          state: string;
        }[];
        const b = models.find((m) => m.id === "b")!;
        return b.state === "loading" && (await queuedModels(proxy.url)).length === 2;
      });

      const timedOut = await plain;
      assert.equal(timedOut.status, 504);
      const { error } = await timedOut.json();
      assert.equal(error.code, "request_timeout");
      assert.equal(error.type, "timeout_error");
      const res = await stream;
      assert.equal(res.status, 200); // the stream began with waiting notes
      const events = await within("the timed-out stream to end", new SseReader(res).rest());
      assert.ok(events[0].comment !== undefined, "it began with a waiting note");
      assert.equal(JSON.parse(events.at(-1)!.data!).error.code, "request_timeout");

      const metrics = await metricsOf(proxy.url);
      assert.equal(metrics.pending_futures, 0);
      assert.equal(metrics.active_workers, 0);
      assert.deepEqual(await queuedModels(proxy.url), []);
      const lines = log.of("request").filter((e) => e.fields.model === "b");
      assert.deepEqual(lines.map((e) => e.fields.status), [504, 504]);
      // The swap goes on without them; once b is up, neither request reaches it.
      await waitFor("b to be loaded", async () => {
        return (await getJson(`${proxy.url}/health`)).body.current_model === "b";
      });
      // A request after them is answered: anything sent before it has reached b by then.
      assert.equal((await post(proxy.url, chatBody("b"))).status, 200);
      const received = (await lab.state("b")).received;
      assert.ok(!received.some((r) => r.body.includes("never-forwarded")));
    },
    { log },
  );
});

Deno.test("on_disconnect: finish lets the backend complete a stream whose client left", async () => {
  await withHomelabProxy(
    [{ id: "a", onDisconnect: "finish" }],
    "num_workers: 1",
    async ({ lab, proxy }) => {
      const res = await post(proxy.url, chatBody("a", { stream: true, fake_hold: true }));
      const sse = new SseReader(res);
      await sse.next();
      await sse.next(); // mid-generation
      await leaveSeen(proxy.url, () => sse.cancel());
      // The proxy saw the client go (its connection closed), and the generation goes on.
      assert.equal((await lab.state()).inflight, 1);
      assert.equal((await metricsOf(proxy.url)).active_workers, 1);
      await lab.release();
      await waitFor("the generation to finish", async () => (await lab.state()).completed === 1);
      assert.equal((await lab.state()).disconnects, 0); // never aborted
      await waitFor(
        "worker released",
        async () => (await metricsOf(proxy.url)).active_workers === 0,
      );
    },
  );
});

Deno.test("on_disconnect: finish, a stream queued at arrival whose client left before the backend's first byte: the backend completes it and the worker is free then, not at request_timeout", async () => {
  // Three prompt tokens of a second each: the answer's head is ~3 s after the request reached
  // the backend, well inside request_timeout.
  await withHomelabProxy(
    [{ id: "a", onDisconnect: "finish", promptUs: 1_000_000 }],
    "num_workers: 1\nrequest_timeout: 120",
    async ({ lab, proxy }) => {
      // The model is not loaded yet: the stream opens at once with a "loading" note, while the
      // job waits for the load.
      const res = await post(proxy.url, chatBody("a", { stream: true, fake_tokens: 2 }));
      const sse = new SseReader(res);
      await sse.next();
      await waitFor("the request to reach the backend", async () => {
        try {
          return (await lab.state()).inflight === 1;
        } catch {
          return false; // still loading: the look-alike does not answer yet
        }
      });
      await leaveSeen(proxy.url, () => sse.cancel());
      await waitFor("the generation to finish", async () => (await lab.state()).completed === 1);
      assert.equal((await lab.state()).disconnects, 0); // never aborted
      await waitFor(
        "the worker to be free once the backend is done",
        async () => (await metricsOf(proxy.url)).active_workers === 0,
      );
      const next = await post(proxy.url, chatBody("a"));
      assert.equal(next.status, 200, await next.text());
    },
  );
});

Deno.test("on_disconnect: finish, a request whose client left and whose backend then died is not retried: no reload for nobody, counted as 499", async () => {
  const log = new CapturedLog();
  await withHomelabProxy(
    [{ id: "a", onDisconnect: "finish", promptUs: 1_000_000 }],
    "num_workers: 1\nrequest_timeout: 120",
    async ({ lab, proxy }) => {
      assert.equal((await post(proxy.url, chatBody("a", { fake_tokens: 1 }))).status, 200);
      const swapsBefore = log.of("swap").length;
      const controller = new AbortController();
      // A prompt the slot's cache does not hold: seconds of prompt processing before a byte.
      const messages = [{ role: "user", content: "a prompt of several words to read first" }];
      const res = post(proxy.url, chatBody("a", { fake_tokens: 2, messages }), {
        signal: controller.signal,
      });
      res.catch(() => {}); // aborted below
      await waitFor("the request to reach the backend", async () => {
        return (await lab.state()).inflight === 1;
      });
      await leaveSeen(proxy.url, () => controller.abort());
      // The backend dies while the request it no longer needs is in its prompt processing.
      await lab.kill(lab.containerOf("a"));
      await waitFor("the worker to be free", async () => {
        return (await metricsOf(proxy.url)).active_workers === 0;
      });
      // A retry is decided before the worker is free: by now it was logged and queued, or never.
      assert.deepEqual(log.of("retry"), []);
      assert.deepEqual(await queuedModels(proxy.url), []);
      assert.equal(log.of("swap").length, swapsBefore, "the model was loaded again");
      assert.equal(log.of("request").at(-1)!.fields.status, 499);
    },
    { log },
  );
});
