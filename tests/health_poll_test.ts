/**
 * What a model that never gets healthy is said to have answered: the `startup_timeout` error a
 * client reads quotes the health URL's last answer, so it must be what the server said, not an
 * artefact of when the deadline fell.
 */
import assert from "node:assert/strict";
import { pollUntilHealthy } from "../lib/health.ts";
import { freePort } from "../demo/free_port.ts";

const LOADING = JSON.stringify({ error: { code: 503, message: "Loading model" } });

/**
 * A health URL on a real socket that answers its first request 503 "Loading model" at once and
 * holds every later one until the server closes, as a server that stopped answering.
 */
async function withHealthServer(
  fn: (url: string) => Promise<void>,
): Promise<void> {
  const held = new Set<() => void>();
  let n = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    const loading = () => new Response(LOADING, { status: 503 });
    if (++n === 1) return loading();
    return new Promise((resolve) => held.add(() => resolve(loading())));
  });
  try {
    await fn(`http://127.0.0.1:${server.addr.port}/health`);
  } finally {
    for (const release of held) release();
    await server.shutdown();
  }
}

Deno.test("health poll: a 503 'Loading model' is still named when the deadline cuts the attempt after it", async () => {
  // A deadline below the first attempt timeout (250 ms): every attempt after the first is cut
  // by the deadline, never by its own timeout. The first answer must come within 250 ms.
  await withHealthServer(async (url) => {
    const result = await pollUntilHealthy(url, { deadline: Date.now() + 200 });
    assert.ok(!result.ready);
    assert.match(result.lastAnswer, /^HTTP 503 .*Loading model/);
  });
});

Deno.test("health poll: a server that stops answering is said to hang, after what it said before", async () => {
  // The first answer must come within the first attempt timeout (250 ms); the later ones hang
  // for their whole timeout before the 1 s deadline.
  await withHealthServer(async (url) => {
    const result = await pollUntilHealthy(url, { deadline: Date.now() + 1000 });
    assert.ok(!result.ready);
    assert.match(
      result.lastAnswer,
      /^no answer within the attempt timeout \(before that: HTTP 503 .*Loading model.*\)$/,
    );
  });
});

Deno.test("health poll: a port nobody listens on is named by its connection error, not 'fetch failed'", async () => {
  const result = await pollUntilHealthy(`http://127.0.0.1:${freePort()}/health`, {
    deadline: Date.now() + 300,
  });
  assert.ok(!result.ready);
  assert.match(result.lastAnswer, /^Connection refused/);
});
