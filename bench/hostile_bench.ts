/**
 * @module
 * Hostile and heavy connections against the proxy process: what its memory does when clients
 * declare big bodies and stall, hold thousands of connections, or really send 60 MB bodies
 * that wait, and how fast /health answers meanwhile. Raw sockets from this process.
 */
import type { FakeHomelab } from "../tests/support/fake_models.ts";
import { waitFor } from "../tests/support/wait_for.ts";
import { rssKb } from "./tools.ts";

interface Target {
  url: string;
  port: number;
  pid: number;
}

const MB = 1024 * 1024;
const encoder = new TextEncoder();

async function queuedBytes(url: string): Promise<number> {
  return (await (await fetch(`${url}/metrics`)).json()).queued_bytes;
}

async function stalled(port: number, text: string): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(encoder.encode(text));
  return conn;
}

const declaring = (bytes: number) =>
  `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${bytes}\r\n\r\n{"model":`;

/** /health round trips while something else goes on: p50 and p99 ms. */
async function healthLatency(url: string, n: number): Promise<{ p50: number; p99: number }> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const started = performance.now();
    await (await fetch(`${url}/health`)).body?.cancel();
    times.push(performance.now() - started);
  }
  times.sort((a, b) => a - b);
  const at = (q: number) => times[Math.min(times.length - 1, Math.ceil(q * times.length) - 1)];
  return { p50: Math.round(at(0.5) * 100) / 100, p99: Math.round(at(0.99) * 100) / 100 };
}

/** Highest RSS (KB) seen every 20 ms until `until` settles. */
async function peakRss(pid: number, until: Promise<unknown>): Promise<number> {
  let done = false;
  until.finally(() => done = true);
  let peak = 0;
  while (!done) {
    peak = Math.max(peak, await rssKb(pid));
    await new Promise((r) => setTimeout(r, 20));
  }
  return Math.max(peak, await rssKb(pid));
}

export async function hostileConnections(
  proxy: Target,
  lab: FakeHomelab,
  sizes: { stalledBig: number; stalledMany: number; bodies: number; bodyMb: number },
): Promise<Record<string, number>> {
  const baselineKb = await rssKb(proxy.pid);
  const out: Record<string, number> = { baseline_rss_mb: Math.round(baselineKb / 1024) };

  // 1. Bodies declared at 60 MB, 9 bytes sent, then silence.
  let conns = await Promise.all(
    Array.from({ length: sizes.stalledBig }, () => stalled(proxy.port, declaring(60_000_000))),
  );
  await waitFor("the stalled bodies read", async () => {
    return (await queuedBytes(proxy.url)) === sizes.stalledBig * 9;
  });
  out.stalled_60mb_rss_delta_mb = Math.round(((await rssKb(proxy.pid)) - baselineKb) / 1024);
  for (const conn of conns) conn.close();

  // 2. Many connections with a 1 MB body declared and a few bytes sent; /health meanwhile.
  conns = [];
  for (let i = 0; i < sizes.stalledMany; i++) conns.push(await stalled(proxy.port, declaring(MB)));
  await waitFor("the many stalled bodies read", async () => {
    return (await queuedBytes(proxy.url)) === sizes.stalledMany * 9;
  }, { timeoutMs: 60_000 });
  out.stalled_many_rss_delta_mb = Math.round(((await rssKb(proxy.pid)) - baselineKb) / 1024);
  const health = await healthLatency(proxy.url, 200);
  out.health_p50_ms_under_stall = health.p50;
  out.health_p99_ms_under_stall = health.p99;
  for (const conn of conns) conn.close();
  await waitFor("the stalled connections gone", async () => {
    return (await queuedBytes(proxy.url)) === 0;
  });

  // 3. Real big bodies that wait: the only worker is held, they queue, then all are answered.
  const held = fetch(`${proxy.url}/v1/chat/completions`, {
    method: "POST",
    body: JSON.stringify({
      model: "a",
      messages: [{ role: "user", content: "hi" }],
      fake_hold: true,
    }),
  }).then((r) => r.text());
  await waitFor("the worker held", async () => (await lab.state()).inflight === 1);
  const beforeKb = await rssKb(proxy.pid);
  const content = "x".repeat(sizes.bodyMb * MB);
  const body = encoder.encode(
    JSON.stringify({ model: "a", messages: [{ role: "user", content }], fake_tokens: 1 }),
  );
  const payloadMb = (sizes.bodies * body.byteLength) / MB;
  const sent = Promise.all(
    Array.from({ length: sizes.bodies }, () =>
      fetch(`${proxy.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      }).then((r) => r.text())),
  );
  const arrived = waitFor("every body held", async () => {
    return (await queuedBytes(proxy.url)) >= sizes.bodies * body.byteLength;
  }, { timeoutMs: 120_000, intervalMs: 50 });
  const peakWaitingKb = await peakRss(proxy.pid, arrived);
  await lab.release();
  const answered = Promise.all([held, sent]);
  const peakAnsweringKb = await peakRss(proxy.pid, answered);
  const peakKb = Math.max(peakWaitingKb, peakAnsweringKb);
  const doneAt = performance.now();
  let settledKb = await rssKb(proxy.pid);
  while (performance.now() - doneAt < 5000) {
    await new Promise((r) => setTimeout(r, 100));
    settledKb = await rssKb(proxy.pid);
  }
  out.bodies = sizes.bodies;
  out.body_mb = sizes.bodyMb;
  out.payload_mb = Math.round(payloadMb);
  out.before_burst_rss_mb = Math.round(beforeKb / 1024);
  out.peak_rss_mb = Math.round(peakKb / 1024);
  out.peak_waiting_rss_mb = Math.round(peakWaitingKb / 1024);
  out.peak_over_payload = Math.round(((peakKb - beforeKb) / 1024 / payloadMb) * 100) / 100;
  out.rss_5s_after_mb = Math.round(settledKb / 1024);
  return out;
}
