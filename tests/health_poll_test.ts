/**
 * What a model that never gets healthy is said to have answered: the `startup_timeout` error a
 * client reads quotes the health URL's last answer, so it must be what the server said, not an
 * artefact of when the deadline fell.
 */
import assert from "node:assert/strict";
import { pollUntilHealthy } from "../lib/health.ts";

const LOADING = JSON.stringify({ error: { code: 503, message: "Loading model" } });

/**
 * A health URL on a real socket. `answer(n)` says how to answer the n-th request (from 1): a
 * delay before a 503 "Loading model", or "hang" (held until the server closes).
 */
async function withHealthServer(
  answer: (n: number) => { afterMs: number } | "hang",
  fn: (url: string) => Promise<void>,
): Promise<void> {
  const held = new Set<() => void>();
  let n = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    const how = answer(++n);
    const loading = () => new Response(LOADING, { status: 503 });
    if (how === "hang") return new Promise((resolve) => held.add(() => resolve(loading())));
    return new Promise((resolve) => setTimeout(() => resolve(loading()), how.afterMs));
  });
  try {
    await fn(`http://127.0.0.1:${server.addr.port}/health`);
  } finally {
    for (const release of held) release();
    await server.shutdown();
  }
}

Deno.test("health poll: a slow 503 the deadline cuts short still names its 'Loading model'", async () => {
  // Each answer takes 100 ms, so the deadline almost always falls inside an attempt.
  await withHealthServer(() => ({ afterMs: 100 }), async (url) => {
    const result = await pollUntilHealthy(url, { deadline: Date.now() + 700 });
    assert.equal(result.ready, false);
    assert.match(!result.ready ? result.lastAnswer : "", /^HTTP 503 .*Loading model/);
  });
});

Deno.test("health poll: a server that stops answering is said to hang, after what it said before", async () => {
  await withHealthServer((n) => n === 1 ? { afterMs: 0 } : "hang", async (url) => {
    const result = await pollUntilHealthy(url, { deadline: Date.now() + 1000 });
    assert.equal(result.ready, false);
    assert.match(
      !result.ready ? result.lastAnswer : "",
      /^no answer within the attempt timeout \(before that: HTTP 503 .*Loading model.*\)$/,
    );
  });
});

Deno.test("health poll: a port nobody listens on is named by its connection error", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  const result = await pollUntilHealthy(`http://127.0.0.1:${port}/health`, {
    deadline: Date.now() + 300,
  });
  assert.equal(result.ready, false);
  assert.match(!result.ready ? result.lastAnswer : "", /refused/i);
});
