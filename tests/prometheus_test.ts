/**
 * /metrics in Prometheus text when a scraper asks for it, checked with a real parser; the
 * seed's JSON stays the default for curl.
 */
import assert from "node:assert/strict";
import parsePrometheus from "parse-prometheus-text-format";
import { wantsPrometheus } from "../lib/prometheus.ts";
import { chatBody, post } from "./support/client.ts";
import { withHomelabProxy } from "./support/proxy.ts";

const SCRAPER_ACCEPT =
  "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

Deno.test("wantsPrometheus() follows Accept and ?format=", () => {
  assert.equal(wantsPrometheus(SCRAPER_ACCEPT, undefined), true);
  assert.equal(wantsPrometheus("*/*", undefined), false);
  assert.equal(wantsPrometheus("application/json", undefined), false);
  assert.equal(wantsPrometheus(null, "prometheus"), true);
  assert.equal(wantsPrometheus(SCRAPER_ACCEPT, "json"), false);
});

interface Family {
  name: string;
  type: string;
  metrics: {
    labels?: Record<string, string>;
    value?: string;
    buckets?: Record<string, string>;
    count?: string;
  }[];
}

Deno.test("GET /metrics with a scraper's Accept: Prometheus text that a real parser reads", async () => {
  await withHomelabProxy([{ id: "a" }, { id: "b" }], "", async ({ proxy }) => {
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
    assert.equal((await post(proxy.url, chatBody("b"))).status, 200);
    // A stream: its counts come from the last chunk's llama-server timings.
    const stream = await post(proxy.url, chatBody("b", { stream: true, max_tokens: 6 }));
    await stream.text();

    const res = await fetch(`${proxy.url}/metrics`, { headers: { accept: SCRAPER_ACCEPT } });
    assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    // The parser throws on any line that is not valid exposition format.
    const families = parsePrometheus(text) as Family[];
    const family = (name: string) => {
      const found = families.find((f) => f.name === name);
      assert.ok(found, `no ${name} in the exposition`);
      return found;
    };
    const sample = (name: string, labels: Record<string, string>) =>
      family(name).metrics.find((m) =>
        Object.entries(labels).every(([k, v]) => m.labels?.[k] === v)
      );

    assert.equal(sample("lqp_requests_total", { model: "b", status: "200" })?.value, "2");
    // "hi" through the look-alike's chat template is 3 prompt tokens; max_tokens (default 4)
    // are answered.
    assert.equal(sample("lqp_tokens_total", { model: "b", kind: "prompt" })?.value, "6");
    assert.equal(sample("lqp_tokens_total", { model: "b", kind: "completion" })?.value, "10");
    assert.equal(sample("lqp_tokens_total", { model: "a", kind: "completion" })?.value, "4");
    assert.equal(sample("lqp_requests_total", { model: "a", status: "200" })?.value, "1");
    assert.equal(sample("lqp_swaps_total", { from: "none", to: "a" })?.value, "1");
    assert.equal(sample("lqp_swaps_total", { from: "a", to: "b" })?.value, "1");
    assert.equal(sample("lqp_model_loaded", { model: "b" })?.value, "1");
    assert.equal(sample("lqp_model_loaded", { model: "a" })?.value, "0");
    assert.equal(sample("lqp_queue_depth", { model: "a" })?.value, "0");
    for (
      const name of [
        "lqp_request_duration_seconds",
        "lqp_queue_wait_seconds",
        "lqp_swap_duration_seconds",
      ]
    ) {
      assert.equal(family(name).type, "HISTOGRAM");
    }
    // This parser flattens labelled histograms, so read those series from the text itself.
    assert.match(text, /^lqp_request_duration_seconds_count\{model="b"\} 2$/m);
    const buckets = [
      ...text.matchAll(/^lqp_request_duration_seconds_bucket\{model="b",le="[^"]+"\} (\d+)$/gm),
    ]
      .map((m) => Number(m[1]));
    assert.equal(buckets.at(-1), 2); // le="+Inf" counts every request
    assert.deepEqual(buckets, [...buckets].sort((x, y) => x - y)); // cumulative

    const json = await (await fetch(`${proxy.url}/metrics`)).json(); // curl's */*
    assert.equal(json.total_requests, 3);
  });
});
