/**
 * Optional API keys: with none configured anyone may call; with keys, every /v1 route needs
 * one, and each key carries a priority class that a request may lower but not raise.
 */
import assert from "node:assert/strict";
import { KeyRing, presentedKey } from "../lib/auth.ts";
import { effectivePriority } from "../lib/body.ts";
import { parseConfig } from "../lib/config.ts";
import { problemsOf } from "./support/config_problems.ts";
import {
  batchDone,
  batchFile,
  createBatch,
  fileLines,
  uploadBatchFile,
} from "./support/batches.ts";
import { chatBody, queuedModels } from "./support/client.ts";
import { startTestProxy, withHomelabProxy } from "./support/proxy.ts";
import { waitFor } from "./support/wait_for.ts";

const FAMILY = "sk-family-0123456789abcdef";
const N8N = "sk-n8n-0123456789abcdef01";
const KEYS_YAML = `api_keys:
  - name: family
    key: ${FAMILY}
  - name: n8n
    key: ${N8N}
    priority: batch
`;

Deno.test("KeyRing.identify() finds the caller of a configured key and nobody else", async () => {
  const ring = await KeyRing.create([
    { name: "family", key: FAMILY, priority: "interactive" },
    { name: "n8n", key: N8N, priority: "batch" },
  ]);
  assert.equal(ring.open, false);
  assert.deepEqual(await ring.identify(N8N), { name: "n8n", priority: "batch" });
  assert.equal(await ring.identify(FAMILY.slice(0, -1)), null);
  assert.equal(await ring.identify(null), null);
  assert.equal((await KeyRing.create([])).open, true);
});

Deno.test("presentedKey() reads a Bearer token or X-Api-Key", () => {
  assert.equal(presentedKey(new Headers({ authorization: "Bearer abc" })), "abc");
  assert.equal(presentedKey(new Headers({ authorization: "bearer  abc " })), "abc");
  assert.equal(presentedKey(new Headers({ "x-api-key": "xyz" })), "xyz");
  assert.equal(presentedKey(new Headers({ authorization: "Basic abc" })), null);
  assert.equal(presentedKey(new Headers()), null);
});

Deno.test("effectivePriority() lets a request lower its key's class, never raise it", () => {
  assert.equal(effectivePriority("interactive", null), "interactive");
  assert.equal(effectivePriority("interactive", "batch"), "batch");
  assert.equal(effectivePriority("batch", "interactive"), "batch");
  assert.equal(effectivePriority("batch", null), "batch");
});

Deno.test("parseConfig() rejects short and repeated API keys", () => {
  assert.deepEqual(
    problemsOf(`api_keys:\n  - name: a\n    key: short\n`),
    ["api_keys.0.key (line 3): expected a key of at least 16 characters"],
  );
  assert.deepEqual(
    problemsOf(`api_keys:\n  - name: b\n    key: ${N8N}\n  - name: b\n    key: ${N8N}\n`),
    [
      "api_keys.1.name (line 4): 'b' is used twice",
      "api_keys.1.key (line 5): the same key is listed twice",
    ],
  );
});

Deno.test("parseConfig() reads a key from key_file and reports a missing or short one", () => {
  const files: Record<string, string> = { "n8n.key": `${N8N}\n`, "short.key": "abc" };
  const read = (path: string) => {
    if (!(path in files)) throw new Error("No such file");
    return files[path];
  };
  const config = parseConfig("api_keys:\n  - name: n8n\n    key_file: n8n.key\n", "x", {}, read);
  assert.deepEqual(config.apiKeys, [{ name: "n8n", key: N8N, priority: "interactive" }]);
  assert.deepEqual(problemsOf("api_keys:\n  - name: c\n", {}, read), [
    "api_keys.0 (line 2): give exactly one of key and key_file",
  ]);
  const bad =
    "api_keys:\n  - name: a\n    key_file: short.key\n  - name: b\n    key_file: gone.key\n";
  assert.deepEqual(problemsOf(bad, {}, read), [
    "api_keys.0.key_file (line 3): expected a key of at least 16 characters",
    "api_keys.1.key_file (line 5): cannot read gone.key (No such file)",
  ]);
});

Deno.test("with keys configured: 401 without a valid key on /v1, /health stays open", async () => {
  const config = `host: 127.0.0.1
port: 0
${KEYS_YAML}
models:
  a:
    container_name: some-container
    backend_url: http://127.0.0.1:9/v1
`;
  await using proxy = await startTestProxy(config, { dockerSocket: "/tmp/lqp-none.sock" });
  const attempts: Record<string, string>[] = [{}, {
    authorization: "Bearer sk-wrong-0123456789abcdef",
  }];
  for (const headers of attempts) {
    const res = await fetch(`${proxy.url}/v1/models`, { headers });
    assert.equal(res.status, 401);
    const { error } = await res.json();
    assert.equal(error.code, "invalid_api_key");
    assert.doesNotMatch(JSON.stringify(error), /sk-/); // no key echoed back
  }
  const ok = await fetch(`${proxy.url}/v1/models`, {
    headers: { authorization: `Bearer ${FAMILY}` },
  });
  assert.equal(ok.status, 200);
  await ok.body?.cancel();
  const health = await fetch(`${proxy.url}/health`);
  assert.notEqual(health.status, 401);
  await health.body?.cancel();
});

Deno.test("a key's priority class orders the queue; X-Priority cannot raise it", async () => {
  await withHomelabProxy([{ id: "a" }], `num_workers: 1\n${KEYS_YAML}`, async ({ lab, proxy }) => {
    const send = (key: string, marker: string, extra: Record<string, string> = {}) =>
      fetch(`${proxy.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...extra },
        body: JSON.stringify(chatBody("a", { marker, fake_hold: marker === "held" })),
      });
    const held = send(FAMILY, "held");
    await waitFor("worker busy", async () => (await lab.state()).inflight === 1);
    const batch = send(N8N, "n8n-1", { "x-priority": "interactive" });
    await waitFor("n8n queued", async () => (await queuedModels(proxy.url)).length === 1);
    const chat = send(FAMILY, "family-1");
    await waitFor("family queued", async () => (await queuedModels(proxy.url)).length === 2);
    const view = await (await fetch(`${proxy.url}/queue`)).json();
    assert.deepEqual(view.jobs.map((j: { priority: string }) => j.priority), [
      "batch",
      "interactive",
    ]);
    await lab.release();
    for (const res of [await held, await batch, await chat]) assert.equal(res.status, 200);
    const received = (await lab.state()).received.filter((r) => r.path === "/v1/chat/completions");
    const order = received.map((r) => /"marker":"([^"]+)"/.exec(r.body)?.[1]);
    assert.deepEqual(order, ["held", "family-1", "n8n-1"]);
    // The proxy's keys are not passed on to the backend.
    assert.ok(received.every((r) => !("authorization" in r.headers)));
  });
});

Deno.test("with keys configured: chat completions, /v1/files and /v1/batches refuse a missing or wrong key with 401 and serve a right one", async () => {
  await withHomelabProxy([{ id: "a" }], KEYS_YAML, async ({ lab, proxy }) => {
    const refusals: Record<string, string>[] = [
      {},
      { authorization: "Bearer sk-wrong-0123456789abcdef" },
      { "x-api-key": "sk-wrong-0123456789abcdef" },
    ];
    const calls: [string, (headers: Record<string, string>) => Promise<Response>][] = [
      ["POST /v1/chat/completions", (headers) =>
        fetch(`${proxy.url}/v1/chat/completions`, {
          method: "POST",
          headers: { ...headers, "content-type": "application/json" },
          body: JSON.stringify(chatBody("a")),
        })],
      ["POST /v1/files", (headers) => uploadBatchFile(proxy.url, batchFile(["a"]), headers)],
      ["GET /v1/files", (headers) => fetch(`${proxy.url}/v1/files`, { headers })],
      ["POST /v1/batches", (headers) =>
        fetch(`${proxy.url}/v1/batches`, {
          method: "POST",
          headers: { ...headers, "content-type": "application/json" },
          body: JSON.stringify({
            input_file_id: "file-none",
            endpoint: "/v1/chat/completions",
            completion_window: "24h",
          }),
        })],
      ["GET /v1/batches", (headers) => fetch(`${proxy.url}/v1/batches`, { headers })],
    ];
    for (const [name, call] of calls) {
      for (const headers of refusals) {
        const res = await call(headers);
        const which = `${name} with ${JSON.stringify(headers)}`;
        assert.equal(res.status, 401, which);
        assert.equal((await res.json()).error.code, "invalid_api_key", which);
      }
    }
    // Nothing refused started a model (and the file list below holds no refused upload).
    assert.deepEqual(await lab.running(), []);

    const family = { authorization: `Bearer ${FAMILY}` };
    const n8n = { "x-api-key": N8N };
    const chat = await calls[0][1](family);
    assert.equal(chat.status, 200);
    assert.equal((await chat.json()).object, "chat.completion");

    const upload = await uploadBatchFile(proxy.url, batchFile(["a", "a"]), n8n);
    assert.equal(upload.status, 200);
    const file = await upload.json();
    const listed = await (await fetch(`${proxy.url}/v1/files`, { headers: family })).json();
    assert.deepEqual(listed.data.map((f: { id: string }) => f.id), [file.id]);
    const batch = await createBatch(proxy.url, file.id, n8n);
    const done = await batchDone(proxy.url, batch.id, { headers: family });
    assert.deepEqual(done.request_counts, { total: 2, completed: 2, failed: 0 });
    const lines = await fileLines(proxy.url, done.output_file_id, n8n);
    assert.deepEqual(lines.map((l) => l.response?.status_code), [200, 200]);
    const batches = await (await fetch(`${proxy.url}/v1/batches`, { headers: n8n })).json();
    assert.deepEqual(batches.data.map((b: { id: string }) => b.id), [batch.id]);
  });
});
