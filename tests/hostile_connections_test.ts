/**
 * Hostile and heavy connections against the proxy as users run it (its own process), over raw
 * sockets: bodies declared big and never sent, headers never finished, idle keep-alives, more
 * connections than allowed, more body bytes than `max_queued_bytes`. Memory stays flat,
 * stalled sockets are closed with 408, a normal client is served throughout, and waiting in
 * the queue is never mistaken for being slow.
 */
import assert from "node:assert/strict";
import { rssKb } from "../bench/tools.ts";
import { chatBody, getJson, post, SseReader } from "./support/client.ts";
import { requireDocker } from "./support/docker_env.ts";
import { createHomelab, type FakeHomelab } from "./support/fake_models.ts";
import { testConfigText } from "./support/proxy.ts";
import { type ProxyProcess, runProxyProcess } from "./support/proxy_process.ts";
import { waitFor } from "./support/wait_for.ts";

/** A homelab with model `a` and the proxy process for it, with `extra` config lines. */
async function withLabProcess(
  extra: string,
  fn: (proxy: ProxyProcess, lab: FakeHomelab) => Promise<void>,
): Promise<void> {
  const api = await requireDocker();
  try {
    await using lab = await createHomelab(api, [{ id: "a" }]);
    await using proxy = await runProxyProcess(testConfigText(lab.configYaml(extra)));
    await fn(proxy, lab);
  } finally {
    api.close();
  }
}

/** A raw connection that sent `text` and then went quiet. */
async function stalled(port: number, text: string): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(text));
  return conn;
}

/** Everything the server sends until it closes the connection. */
async function untilClosed(conn: Deno.TcpConn): Promise<string> {
  let text = "";
  const buf = new Uint8Array(4096);
  try {
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
  } catch {
    // reset by the server: what arrived is the answer
  } finally {
    conn.close();
  }
  return text;
}

async function metricsOf(url: string) {
  return (await getJson(`${url}/metrics`)).body as {
    queued_bytes: number;
    connections: { open: number; refused: number; timed_out: number };
  };
}

const declared = (bytes: number, auth = "") =>
  `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${auth}Content-Length: ${bytes}\r\n\r\n{"model":`;

Deno.test("50 connections declaring 60 MB bodies and stalling: RSS grows less than 50 MB, each gets 408 after body_timeout, others are served", async () => {
  await withLabProcess("header_timeout: 1\nbody_timeout: 2", async (proxy) => {
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200); // warm: model loaded
    const baselineKb = await rssKb(proxy.pid);
    const conns = await Promise.all(
      Array.from({ length: 50 }, () => stalled(proxy.port, declared(60_000_000))),
    );
    // Each sent 9 bytes of its body; the proxy holds exactly those.
    await waitFor("the 50 partial bodies to be read", async () => {
      return (await metricsOf(proxy.url)).queued_bytes === 50 * '{"model":'.length;
    });
    const stalledKb = await rssKb(proxy.pid);
    assert.ok(
      stalledKb - baselineKb < 50 * 1024,
      `RSS grew by ${Math.round((stalledKb - baselineKb) / 1024)} MB`,
    );
    // A normal client is served while they stall.
    assert.equal((await fetch(`${proxy.url}/health`).then((r) => r.text(), () => "")) !== "", true);
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
    const answers = await Promise.all(conns.map(untilClosed));
    for (const answer of answers) {
      assert.match(answer, /^HTTP\/1\.1 408 /);
      assert.match(answer, /"code":"request_timeout"/);
    }
    const after = await waitFor("the stalled bodies to be let go", async () => {
      const m = await metricsOf(proxy.url);
      return m.queued_bytes === 0 ? m : null;
    });
    assert.ok(after.connections.timed_out >= 50);
  });
});

Deno.test("connections that send half a header are closed with 408 after header_timeout; idle keep-alives after idle_timeout", async () => {
  await withLabProcess("header_timeout: 1\nidle_timeout: 1", async (proxy) => {
    const halves = await Promise.all(
      Array.from(
        { length: 200 },
        () => stalled(proxy.port, "POST /v1/chat/completions HTTP/1.1\r\nHo"),
      ),
    );
    const idle = await stalled(proxy.port, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    const answers = await Promise.all(halves.map(untilClosed));
    for (const answer of answers) assert.match(answer, /^HTTP\/1\.1 408 /);
    // The keep-alive connection got its answer, then was closed for sitting idle.
    assert.match(await untilClosed(idle), /^HTTP\/1\.1 200 [\s\S]*"status"/);
    await waitFor("the closed connections to be counted", async () => {
      return (await metricsOf(proxy.url)).connections.open <= 1; // this /metrics request
    });
  });
});

Deno.test("past max_connections new connections are closed and logged once; /health still answers, other paths get 503", async () => {
  await withLabProcess("max_connections: 40\nheader_timeout: 30", async (proxy) => {
    // Five more than the cap: the cap is reached whoever else is connected.
    const held = await Promise.all(
      Array.from({ length: 45 }, () => stalled(proxy.port, "GET /health HTTP/1.1\r\nHo")),
    );
    await waitFor("the cap to be logged", () => /max_connections_reached/.test(proxy.output));
    // Over the cap, on fresh connections: a health check still gets through, a chat request
    // is turned away.
    const health = await untilClosed(
      await stalled(proxy.port, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
    assert.match(health, /^HTTP\/1\.1 200 /);
    const body = JSON.stringify(chatBody("a"));
    const chat = await untilClosed(
      await stalled(
        proxy.port,
        `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      ),
    );
    assert.match(chat, /^HTTP\/1\.1 503 /);
    assert.match(chat, /"code":"too_many_connections"/);
    // Flooding past the reserve closes connections at once.
    const flood = await Promise.all(
      Array.from({ length: 40 }, () => stalled(proxy.port, "GET /health HTTP/1.1\r\nHo")),
    );
    const closed = await Promise.all(flood.map(untilClosed));
    assert.ok(closed.filter((text) => text === "").length >= 20, "most of the flood was closed");
    assert.equal(proxy.output.match(/max_connections_reached/g)?.length, 1);
    for (const conn of held) conn.close();
    await waitFor("a normal client to be served again", async () => {
      return (await post(proxy.url, chatBody("a"))).status === 200;
    });
    assert.ok((await metricsOf(proxy.url)).connections.refused >= 20);
  });
});

Deno.test("max_queued_bytes: bodies past it get 429 with Retry-After; a key past its share too; bytes held show in /metrics", async () => {
  const keys = [
    "api_keys:",
    "  - { name: k1, key: sk-k1-0123456789abcdef }",
    "  - { name: k2, key: sk-k2-0123456789abcdef }",
  ].join("\n");
  await withLabProcess(
    `max_queued_bytes: 1mb\nmax_queue_share: 0.5\n${keys}`,
    async (proxy, lab) => {
      const send = (key: string, extra: Record<string, unknown>) =>
        fetch(`${proxy.url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
          body: JSON.stringify(chatBody("a", extra)),
        });
      const pad = "x".repeat(400_000);
      // Each key's share is 512 KB: 400 KB fits, then waits on the model (held).
      const first = send("sk-k1-0123456789abcdef", { pad, fake_hold: true });
      await waitFor("the first body to be held", async () => {
        return (await metricsOf(proxy.url)).queued_bytes > 400_000;
      });
      const prometheus = await (await fetch(`${proxy.url}/metrics?format=prometheus`)).text();
      assert.match(prometheus, /^lqp_queued_bytes 4\d{5}$/m);
      // Same key, another 400 KB: past its share.
      const share = await send("sk-k1-0123456789abcdef", { pad });
      assert.equal(share.status, 429);
      assert.equal((await share.json()).error.code, "queue_share_exceeded");
      // Another key, 400 KB: fits its share; a third 400 KB: past the whole 1 MB.
      const second = send("sk-k2-0123456789abcdef", { pad, fake_hold: true });
      await waitFor("the second body to be held", async () => {
        return (await metricsOf(proxy.url)).queued_bytes > 800_000;
      });
      const full = await send("sk-k2-0123456789abcdef", { pad: "y".repeat(250_000) });
      assert.equal(full.status, 429);
      assert.ok(Number(full.headers.get("retry-after")) >= 1);
      const error = (await full.json()).error;
      assert.equal(error.code, "queue_bytes_full");
      assert.equal(error.type, "rate_limit_error");
      await waitFor("both held requests at the model", async () => {
        return (await lab.state()).inflight === 2;
      });
      await lab.release();
      assert.equal((await first).status, 200);
      assert.equal((await second).status, 200);
      await waitFor("the bytes to be given back", async () => {
        return (await metricsOf(proxy.url)).queued_bytes === 0;
      });
      assert.equal((await send("sk-k2-0123456789abcdef", { pad })).status, 200);
    },
  );
});

Deno.test("max_queued_bytes: a stream's prompt stops counting once its answer streams, so a long stream does not refuse the next big request", async () => {
  await withLabProcess("max_queued_bytes: 600kb\nnum_workers: 2", async (proxy, lab) => {
    const pad = "x".repeat(400_000);
    const streaming = await post(proxy.url, chatBody("a", { pad, stream: true, fake_hold: true }));
    assert.equal(streaming.status, 200);
    // Past the loading notes and the role: the look-alike sent its first token and holds.
    const events = new SseReader(streaming);
    for (let e = await events.next(); !e?.data?.includes('"content":"'); e = await events.next()) {
      assert.ok(e !== null, "the stream ended before its first token");
    }
    // Given back when the backend's answer started, before its first byte was relayed.
    assert.equal((await metricsOf(proxy.url)).queued_bytes, 0);
    // 400 KB more would pass the 600 KB if the first prompt still counted.
    const next = await post(proxy.url, chatBody("a", { pad }));
    const text = await next.text();
    assert.equal(next.status, 200, text);
    await lab.release();
    const rest = await events.rest();
    assert.equal(rest.at(-1)?.data, "[DONE]");
  });
});

Deno.test("with API keys, a wrong key is refused before any of the body is read", async () => {
  await withLabProcess(
    "api_keys:\n  - { name: k1, key: sk-k1-0123456789abcdef }",
    async (proxy) => {
      // Headers only: a 1 MB body is declared and never sent.
      const conn = await stalled(
        proxy.port,
        declared(1_000_000, "Authorization: Bearer sk-wrong-0123456789abcdef\r\n").replace(
          /\{"model":$/,
          "",
        ),
      );
      const answer = await untilClosed(conn);
      assert.match(answer, /^HTTP\/1\.1 401 /);
      assert.match(answer, /"code":"invalid_api_key"/);
      assert.equal((await metricsOf(proxy.url)).queued_bytes, 0);
    },
  );
});

Deno.test("waiting in the queue longer than header_timeout + body_timeout is not slow: the request is served", async () => {
  await withLabProcess("num_workers: 1\nheader_timeout: 1\nbody_timeout: 1", async (proxy, lab) => {
    const held = post(proxy.url, chatBody("a", { fake_hold: true }));
    await waitFor("the worker busy", async () => {
      try {
        return (await lab.state()).inflight === 1;
      } catch {
        return false; // still loading
      }
    });
    const queued = post(proxy.url, chatBody("a"));
    await waitFor("the second request queued", async () => {
      const m = (await getJson(`${proxy.url}/metrics`)).body as { total_requests: number };
      return m.total_requests === 2;
    });
    // Longer than both timeouts together, counted by the proxy's own clock.
    await waitFor("three seconds in the queue", async () => {
      const queue = (await getJson(`${proxy.url}/queue`)).body as { jobs: { waited_s: number }[] };
      return (queue.jobs[0]?.waited_s ?? 0) >= 3;
    }, { timeoutMs: 30_000, intervalMs: 200 });
    await lab.release();
    assert.equal((await held).status, 200);
    assert.equal((await queued).status, 200);
  });
});
