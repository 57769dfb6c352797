/**
 * What an operator reads: one line per request and per swap, progress while a model loads,
 * and JSON lines when asked for.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../lib/config.ts";
import { formatJsonLine, formatLine } from "../lib/log.ts";
import { chatBody, post } from "./support/client.ts";
import { requireDocker } from "./support/docker_env.ts";
import { createHomelab } from "./support/fake_models.ts";
import { CapturedLog } from "./support/log_capture.ts";
import { startTestProxy } from "./support/proxy.ts";

Deno.test("log lines: plain text by default, JSON lines that parse back to the same fields", () => {
  const now = new Date("2026-11-25T19:00:00.000Z");
  const fields = { from: "none", to: "qwen 7b", stop_ms: 12, skipped: undefined };
  assert.equal(
    formatLine("INFO", "swap", fields, now),
    '2026-11-25T19:00:00.000Z INFO swap from=none to="qwen 7b" stop_ms=12',
  );
  assert.deepEqual(JSON.parse(formatJsonLine("INFO", "swap", fields, now)), {
    time: "2026-11-25T19:00:00.000Z",
    level: "INFO",
    event: "swap",
    from: "none",
    to: "qwen 7b",
    stop_ms: 12,
  });
  assert.equal(parseConfig("log_format: json\n", "t").logFormat, "json");
  assert.equal(parseConfig("", "t", { LOG_FORMAT: "json" }).logFormat, "json");
  assert.throws(
    () => parseConfig("", "t", { LOG_FORMAT: "xml" }),
    /env LOG_FORMAT: expected text or json, got 'xml'/,
  );
});

Deno.test("a slow load logs progress lines, then one swap line and one request line", async () => {
  const api = await requireDocker();
  try {
    await using lab = await createHomelab(api, [{ id: "slow", loadMs: 1500 }]);
    const log = new CapturedLog();
    await using proxy = await startTestProxy(lab.configYaml(), { log, loadProgressMs: 300 });
    await proxy.reconciled;
    const res = await post(proxy.url, chatBody("slow"));
    assert.equal(res.status, 200);
    const requestId = res.headers.get("x-request-id");
    await res.text();

    const loading = log.of("loading");
    assert.ok(loading.length >= 2, `expected progress lines, got ${loading.length}`);
    assert.equal(loading[0].fields.model, "slow");
    assert.equal(loading[0].fields.timeout_s, 30);
    const swaps = log.of("swap");
    assert.equal(swaps.length, 1);
    assert.equal(swaps[0].fields.to, "slow");
    // Progress lines come while loading, so all before the swap line.
    assert.ok(log.entries.indexOf(loading.at(-1)!) < log.entries.indexOf(swaps[0]));
    const requests = log.of("request");
    assert.equal(requests.length, 1);
    assert.equal(requests[0].fields.id, requestId);
    assert.equal(requests[0].fields.status, 200);
    assert.equal(requests[0].fields.prompt_tokens, 3); // "hi" through the chat template
    assert.equal(requests[0].fields.completion_tokens, 4);
    assert.ok(Number(requests[0].fields.swap_ms) >= 1000, "its swap time is in its line");
  } finally {
    api.close();
  }
});
