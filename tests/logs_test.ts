/**
 * What an operator reads: one line per request and per swap, progress while a model loads,
 * and JSON lines when asked for (from a real proxy process too).
 */
import assert from "node:assert/strict";
import { parseConfig } from "../lib/config.ts";
import { formatJsonLine, formatLine } from "../lib/log.ts";
import { chatBody, post } from "./support/client.ts";
import { requireDocker } from "./support/docker_env.ts";
import { createHomelab } from "./support/fake_models.ts";
import { CapturedLog } from "./support/log_capture.ts";
import { startTestProxy, testConfigText } from "./support/proxy.ts";
import { runProxyProcess } from "./support/proxy_process.ts";
import { waitFor } from "./support/wait_for.ts";

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

Deno.test("LOG_FORMAT=json: every line a real proxy process prints is one JSON object; its swap and request lines carry the documented fields", async () => {
  const api = await requireDocker();
  try {
    await using lab = await createHomelab(api, [{ id: "a" }]);
    await using proxy = await runProxyProcess(testConfigText(lab.configYaml()), {
      env: { LOG_FORMAT: "json" },
    });
    const res = await post(proxy.url, chatBody("a", { stream: true }));
    assert.equal(res.status, 200);
    await res.text();
    const id = res.headers.get("x-request-id");
    const lines = await waitFor("the request's log line", () => {
      const lines = proxy.output.split("\n").filter((line) => line !== "");
      return lines.some((line) => line.includes(`"event":"request"`)) && lines;
    });
    const entries = lines.map((line) => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        assert.fail(`not a JSON line: ${line}`);
      }
    });
    for (const entry of entries) {
      assert.match(String(entry.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.ok(["INFO", "WARN", "ERROR"].includes(String(entry.level)), `level ${entry.level}`);
      assert.equal(typeof entry.event, "string");
    }
    const events = entries.map((e) => e.event);
    // The warning about no API keys goes to stderr, in JSON too.
    for (const event of ["listening", "no_api_keys", "swap", "request"]) {
      assert.ok(events.includes(event), `no ${event} line in ${events.join(",")}`);
    }
    const swap = entries.find((e) => e.event === "swap")!;
    assert.equal(swap.from, "none");
    assert.equal(swap.to, "a");
    for (const field of ["stop_ms", "start_ms", "healthy_ms"]) {
      assert.equal(typeof swap[field], "number", `swap ${field}`);
    }
    const request = entries.find((e) => e.event === "request")!;
    assert.equal(request.id, id);
    assert.equal(request.model, "a");
    assert.equal(request.path, "/v1/chat/completions");
    assert.equal(request.stream, true);
    assert.equal(request.status, 200);
    assert.equal(request.attempts, 1);
    assert.equal(request.prompt_tokens, 3);
    assert.equal(request.completion_tokens, 4);
    for (const field of ["wait_ms", "swap_ms", "ms"]) {
      assert.equal(typeof request[field], "number", `request ${field}`);
    }
  } finally {
    api.close();
  }
});
