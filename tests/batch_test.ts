/**
 * The OpenAI Batch API on the local GPU: the official client's whole flow, line-numbered
 * errors for bad files, lines grouped by model, interactive requests first, cancellation.
 */
import assert from "node:assert/strict";
import OpenAI from "openai";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { chatBody, getJson, post } from "./support/client.ts";
import { withHomelabProxy } from "./support/proxy.ts";
import type { FakeHomelab } from "./support/fake_models.ts";
import {
  batchDone,
  batchFile,
  customIds,
  fileLines,
  getBatch,
  submitBatch,
  uploadBatchFile,
} from "./support/batches.ts";
import { waitFor, within } from "./support/wait_for.ts";
import { STORE_KINDS, withStore } from "./support/stores.ts";
import { BatchService } from "../lib/batch/service.ts";
import { systemClock } from "../lib/clock.ts";
import { silentLogger } from "../lib/log.ts";

async function swapsSoFar(baseUrl: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics?format=prometheus`)).text();
  const families = parsePrometheusTextFormat(text) as {
    name: string;
    metrics: { value: string }[];
  }[];
  const family = families.find((f) => f.name === "lqp_swaps_total");
  return (family?.metrics ?? []).reduce((sum, m) => sum + Number(m.value), 0);
}

Deno.test("openai client: upload a batch file, create a batch, poll it, read the output", async () => {
  await withHomelabProxy([{ id: "a" }, { id: "b" }], "", async ({ proxy }) => {
    const client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const models = ["a", "b", "a", "b", "a", "b"];
    const file = await client.files.create({
      file: new File([batchFile(models)], "requests.jsonl"),
      purpose: "batch",
    });
    assert.equal(file.purpose, "batch");
    assert.equal((await client.files.retrieve(file.id)).bytes, file.bytes);

    const created = await client.batches.create({
      input_file_id: file.id,
      endpoint: "/v1/chat/completions",
      completion_window: "24h",
      metadata: { job: "nightly" },
    });
    assert.equal(created.status, "in_progress");
    assert.equal(created.request_counts?.total, 6);

    const done = await waitFor("the batch to complete", async () => {
      const batch = await client.batches.retrieve(created.id);
      return batch.status === "completed" && batch;
    }, { timeoutMs: 60_000, intervalMs: 100 });
    assert.deepEqual(done.request_counts, { total: 6, completed: 6, failed: 0 });
    assert.equal(done.error_file_id, null);
    assert.deepEqual(done.metadata, { job: "nightly" });

    const output = await (await client.files.content(done.output_file_id!)).text();
    const lines = output.trim().split("\n").map((line) => JSON.parse(line));
    assert.deepEqual(lines.map((l) => l.custom_id).sort(), models.map((_, i) => `line-${i}`));
    for (const line of lines) {
      assert.equal(line.response.status_code, 200);
      assert.equal(line.response.body.object, "chat.completion");
      assert.equal(line.error, null);
    }
    // Grouped by model: a, then b; never back and forth six times.
    assert.ok(await swapsSoFar(proxy.url) <= 2, `swaps: ${await swapsSoFar(proxy.url)}`);

    const listed = await client.batches.list();
    assert.deepEqual(listed.data.map((b) => b.id), [created.id]);
    await client.files.delete(file.id);
    const gone = await fetch(`${proxy.url}/v1/files/${file.id}`);
    assert.equal(gone.status, 404);
    assert.equal((await gone.json()).error.code, "file_not_found");
  });
});

Deno.test("a bad batch file is refused with every problem and its line number", async () => {
  await withHomelabProxy([{ id: "a" }], "", async ({ proxy }) => {
    const good = JSON.parse(batchFile(["a"]).trim());
    const text = [
      JSON.stringify(good),
      "{not json",
      JSON.stringify({ ...good, custom_id: "line-0" }),
      JSON.stringify({ ...good, custom_id: "x", body: { ...good.body, model: "nope" } }),
      JSON.stringify({ ...good, custom_id: "y", method: "GET" }),
      JSON.stringify({ ...good, custom_id: "z", body: { ...good.body, stream: true } }),
      JSON.stringify({ ...good, custom_id: "w", body: { model: "a" } }),
    ].join("\n");
    const res = await uploadBatchFile(proxy.url, text);
    assert.equal(res.status, 400);
    const { error } = await res.json();
    assert.equal(error.code, "invalid_batch_file");
    assert.equal(error.type, "invalid_request_error");
    assert.match(error.message, /6 problem/);
    assert.match(error.message, /line 2: not valid JSON/);
    assert.match(error.message, /line 3: custom_id 'line-0' is already used on line 1/);
    assert.match(error.message, /line 4: unknown model 'nope'/);
    assert.match(error.message, /line 5: method must be "POST"/);
    assert.match(error.message, /line 6: body.stream is not supported/);
    assert.match(error.message, /line 7: .*messages/);

    const notBatch = new FormData();
    notBatch.append("purpose", "fine-tune");
    notBatch.append("file", new File([batchFile(["a"])], "x.jsonl"));
    const purpose = await fetch(`${proxy.url}/v1/files`, { method: "POST", body: notBatch });
    assert.equal(purpose.status, 400);
    assert.equal((await purpose.json()).error.code, "invalid_purpose");

    const missing = await fetch(`${proxy.url}/v1/batches`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        input_file_id: "file-nope",
        endpoint: "/v1/chat/completions",
        completion_window: "24h",
      }),
    });
    assert.equal(missing.status, 404);
    assert.equal((await missing.json()).error.code, "file_not_found");
    assert.deepEqual((await (await fetch(`${proxy.url}/v1/batches`)).json()).data, []);
  });
});

/** A batch of `lines` requests that each wait for the look-alike's release, one running. */
async function heldBatch(baseUrl: string, lab: FakeHomelab, lines: number) {
  const batch = await submitBatch(baseUrl, batchFile(Array(lines).fill("a"), { fake_hold: true }));
  await waitFor(
    "a batch line to reach the backend",
    async () => (await lab.state()).inflight === 1,
  );
  return batch;
}

Deno.test("a chat request waits for at most the batch lines already running, not the batch", async () => {
  await withHomelabProxy([{ id: "a" }], "num_workers: 1", async ({ proxy, lab }) => {
    const batch = await heldBatch(proxy.url, lab, 8);
    const chat = post(proxy.url, chatBody("a"));
    await waitFor("the chat request to wait in the queue", async () => {
      const queue = (await getJson(`${proxy.url}/queue`)).body as {
        jobs: { priority: string }[];
      };
      return queue.jobs.some((job) => job.priority === "interactive");
    });
    // The batch line running now finishes; the next request the backend gets is the chat.
    assert.equal(await lab.release(), 1);
    assert.equal((await within("the chat answer after one batch line", chat)).status, 200);
    const generations = (await lab.state()).received.filter((r) =>
      r.path === "/v1/chat/completions"
    );
    assert.deepEqual(
      generations.map((r) => r.body.includes("fake_hold") ? "batch" : "chat"),
      ["batch", "chat", ...(generations.length > 2 ? ["batch"] : [])],
    );
    let released = 1;
    while ((await getBatch(proxy.url, batch.id)).status !== "completed") {
      released += await lab.release();
    }
    assert.equal(released, 8);
  });
});

Deno.test("cancelling a batch: waiting lines are cancelled, the running one finishes", async () => {
  await withHomelabProxy([{ id: "a" }], "num_workers: 1", async ({ proxy, lab }) => {
    const batch = await heldBatch(proxy.url, lab, 20);
    const cancelling = await fetch(`${proxy.url}/v1/batches/${batch.id}/cancel`, {
      method: "POST",
    });
    assert.equal((await cancelling.json()).status, "cancelling");
    await waitFor("the held line to be released", async () => await lab.release() > 0);
    const done = await batchDone(proxy.url, batch.id);
    assert.equal(done.status, "cancelled");
    assert.equal(done.request_counts.completed, 1);
    const output = await fileLines(proxy.url, done.output_file_id);
    assert.equal(output.length, 1);
    assert.equal((await lab.state()).completed, 1);
  });
});

for (const kind of STORE_KINDS) {
  Deno.test(`${kind} store: a line whose nodes died max_attempts times is in the error file with its id and custom_id`, async () => {
    await withStore(kind, async (store) => {
      const service = new BatchService({
        store,
        clock: systemClock,
        log: silentLogger,
        rules: { maxLines: 10, maxMessages: 10, maxJsonDepth: 32, resolveModel: (name) => name },
        onEnqueued: () => {},
        onCancelled: () => {},
      });
      const text = batchFile(["a", "a"]);
      const file = await service.uploadFile("in.jsonl", "batch", new TextEncoder().encode(text));
      const batch = await service.createBatch({
        input_file_id: file.id,
        endpoint: "/v1/chat/completions",
        completion_window: "24h",
      });
      // A node claims both lines and dies without a lease; with max_attempts 1 they are dead.
      const claimed = await store.claim("a", "gone-node", 2, Date.now());
      assert.equal(claimed.length, 2);
      assert.equal((await store.recover(Date.now(), 1)).dead, 2);
      await service.settle(batch.id);
      const done = await service.getBatch(batch.id);
      assert.equal(done.status, "completed");
      assert.deepEqual(done.request_counts, { total: 2, completed: 0, failed: 2 });
      const lines = new TextDecoder().decode(await service.fileContent(done.error_file_id!))
        .trim().split("\n").map((line) => JSON.parse(line));
      assert.deepEqual(lines.map((line) => line.custom_id).sort(), customIds(text).sort());
      for (const line of lines) {
        assert.match(line.id, /^batch_req_/);
        assert.equal(line.response, null);
        assert.equal(line.error.code, "max_attempts_exceeded");
      }
    });
  });
}
