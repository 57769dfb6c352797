/**
 * Durability against real failures: the proxy process killed with SIGKILL in the middle of
 * a batch (KV store on disk), and Redis stopped and started again under a running proxy
 * (Upstash REST gateway, append-only Redis).
 */
import assert from "node:assert/strict";
import { chatBody, getJson, post } from "./support/client.ts";
import { requireDocker } from "./support/docker_env.ts";
import { createHomelab } from "./support/fake_models.ts";
import { freePort } from "../demo/free_port.ts";
import { startTestProxy } from "./support/proxy.ts";
import { startProxyProcess } from "./support/proxy_process.ts";
import { watchOutput } from "./support/process_output.ts";
import { RedisStack } from "./support/stores.ts";
import {
  batchDone,
  batchFile,
  customIds,
  fileLines,
  getBatch,
  submitBatch,
} from "./support/batches.ts";
import { waitFor, within } from "./support/wait_for.ts";

const ROOT = new URL("..", import.meta.url).pathname;

function assertEachOnce(lines: { custom_id: string }[], total: number): void {
  const ids = lines.map((line) => line.custom_id);
  assert.equal(new Set(ids).size, ids.length, "a custom_id appears twice");
  assert.deepEqual(ids.sort(), Array.from({ length: total }, (_, i) => `line-${i}`).sort());
}

Deno.test("kill -9, then SIGTERM, in the middle of a batch: after restarts it completes, each line once", async () => {
  const api = await requireDocker();
  const name = `durability-${crypto.randomUUID().slice(0, 8)}`;
  // Under ./data: the only place `deno task start` may write.
  const kvPath = `data/${name}.sqlite`;
  const configPath = `${ROOT}data/${name}.yml`;
  try {
    await using lab = await createHomelab(api, [{ id: "a", tokenMs: 20 }, {
      id: "b",
      tokenMs: 20,
    }]);
    await Deno.mkdir(`${ROOT}data`, { recursive: true });
    await Deno.writeTextFile(
      configPath,
      // An hour's lease: the proxy after a kill -9 takes the file over at once, not an hour on.
      lab.configYaml(`store:\n  path: ${kvPath}\n  lease: 3600\nnum_workers: 2`),
    );
    const port = freePort();
    const url = `http://127.0.0.1:${port}`;
    const total = 40;
    let child = await startProxyProcess(configPath, port);
    await waitFor("the proxy to listen", async () => (await fetch(`${url}/health`)).status === 200);
    const batch = await submitBatch(
      url,
      batchFile(
        Array.from({ length: total }, (_, i) => (i % 3 === 0 ? "b" : "a")),
        { fake_tokens: 3 },
      ),
    );
    // A synchronous request in flight when the process dies must never run again.
    const sync = post(url, chatBody("a", { fake_hold: true })).catch(() => null);
    await waitFor("some lines to finish", async () => {
      return (await getBatch(url, batch.id)).request_counts.completed >= 5;
    });
    child.kill("SIGKILL");
    await child.status;

    await sync;
    await lab.release();

    // Then a clean stop in the middle: lines not started go back, exit 0, nothing lost.
    {
      await using stopping = watchOutput(
        await startProxyProcess(configPath, port, { output: "piped" }),
      );
      await waitFor("more lines to finish", async () => {
        return (await getBatch(url, batch.id)).request_counts.completed >= 15;
      });
      stopping.child.kill("SIGTERM");
      const { code } = await stopping.child.status;
      assert.equal(
        code,
        0,
        `exit code ${code} after SIGTERM; the proxy printed:\n${stopping.output}`,
      );
    }

    child = await startProxyProcess(configPath, port);
    try {
      const done = await batchDone(url, batch.id);
      assert.equal(done.status, "completed");
      assert.deepEqual(done.request_counts, { total, completed: total, failed: 0 });
      assertEachOnce(await fileLines(url, done.output_file_id), total);
      const metrics = await waitFor("the held request to be marked abandoned", async () => {
        const body = (await getJson(`${url}/metrics`)).body;
        const stats = body.queue_stats as { abandoned_jobs: number };
        return stats.abandoned_jobs >= 1 && stats;
      });
      assert.equal(metrics.abandoned_jobs, 1);
    } finally {
      child.kill("SIGTERM");
      await child.status;
    }
  } finally {
    api.close();
    for (
      const path of [
        ...["", "-shm", "-wal", ".lock"].map((suffix) => `${ROOT}${kvPath}${suffix}`),
        configPath,
      ]
    ) {
      await Deno.remove(path).catch(() => {});
    }
  }
});

Deno.test("Redis restarted mid-run: 503 while it is down, in-flight work finishes, nothing lost", async () => {
  const api = await requireDocker();
  try {
    // Every step has a deadline: a request the proxy never answers fails the test, saying
    // which one, instead of hanging the suite.
    await using stack = await within("redis-server and its gateway to start", RedisStack.start());
    await using lab = await within(
      "the look-alike container",
      createHomelab(api, [{ id: "a", tokenMs: 5 }]),
    );
    await using proxy = await within(
      "the proxy to start",
      startTestProxy(lab.configYaml(`${stack.storeYaml(2)}\nnum_workers: 1`)),
    );
    await within("the proxy's start-up reconcile", proxy.reconciled);
    const first = await within("the first request's answer", post(proxy.url, chatBody("a")));
    assert.equal(first.status, 200);
    await first.body?.cancel();

    const total = 30;
    const batch = await within(
      "the batch to be submitted",
      submitBatch(proxy.url, batchFile(Array(total).fill("a"), { fake_tokens: 5 })),
    );
    const inflight = post(proxy.url, chatBody("a", { fake_hold: true }));
    await waitFor("the held request to reach the backend", async () => {
      return (await lab.state()).received.some((r) => r.body.includes("fake_hold"));
    });

    await within("redis-server to stop", stack.redis.stop());
    const refused = await waitFor("a new request to be refused", async () => {
      const res = await post(proxy.url, chatBody("a"));
      const body = await res.json();
      assert.ok(res.status === 200 || res.status === 503, `status ${res.status}`);
      return res.status === 503 && body;
    });
    assert.equal(refused.error.code, "store_unavailable");
    assert.match(refused.error.message, /job store \(redis\) is unreachable/);
    const health = await within("/health while Redis is down", getJson(`${proxy.url}/health`));
    assert.equal(health.status, 503);
    assert.match(String(health.body.message), /store/);

    await within("the held request to be released", lab.release());
    const finished = await within("the answer of the request in flight", inflight);
    assert.equal(finished.status, 200, "the request in flight finished");
    await finished.body?.cancel();

    await within("redis-server to start again", stack.redis.resume());
    await waitFor("service to resume by itself", async () => {
      const res = await post(proxy.url, chatBody("a"));
      await res.body?.cancel();
      return res.status === 200;
    });
    const done = await batchDone(proxy.url, batch.id);
    assert.equal(done.status, "completed");
    assert.equal(done.request_counts.completed, total);
    assertEachOnce(
      await within("the batch's output file", fileLines(proxy.url, done.output_file_id)),
      total,
    );
  } finally {
    api.close();
  }
});

Deno.test("Redis store: a batch line whose batch could not be read once, right after its claim, still runs: the batch completes with every line in its output file", async () => {
  const api = await requireDocker();
  try {
    await using stack = await within("redis-server and its gateway to start", RedisStack.start());
    await using lab = await createHomelab(api, [{ id: "a" }]);
    await using proxy = await startTestProxy(lab.configYaml(`${stack.storeYaml(2)}`));
    await proxy.reconciled;
    const text = batchFile(["a", "a", "a"]);
    // The next reads of a batch's document fail, the retry too: the batch runner's read, the
    // first after the batch is created (this test reads it only once the fault was spent).
    await stack.gateway.failNext("HGETALL", "doc:batch:", 2);
    const batch = await submitBatch(proxy.url, text);
    await waitFor(
      "the store blip to be spent",
      async () => await stack.gateway.failuresLeft() === 0,
    );
    const done = await batchDone(proxy.url, batch.id);
    assert.equal(done.status, "completed");
    assert.deepEqual(done.request_counts, { total: 3, completed: 3, failed: 0 });
    const output = await fileLines(proxy.url, done.output_file_id);
    assert.deepEqual(
      output.map((line) => line.custom_id).sort(),
      customIds(text).sort(),
    );
  } finally {
    api.close();
  }
});
