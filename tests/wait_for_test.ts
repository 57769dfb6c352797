/** The tests' one way to wait: transient errors are retried, assertions inside fail at once. */
import assert from "node:assert/strict";
import { waitFor } from "./support/wait_for.ts";

Deno.test("waitFor(): a probe that throws while a service starts is retried until it answers", async () => {
  let calls = 0;
  const value = await waitFor("the third call", () => {
    if (++calls < 3) throw new TypeError("connection refused");
    return calls;
  });
  assert.equal(value, 3);
});

Deno.test("waitFor(): an assertion that fails inside a probe fails at once, with its own message", async () => {
  let calls = 0;
  await assert.rejects(
    waitFor("something that must not see a 500", () => {
      calls++;
      assert.equal(500, 200, "status 500");
      return true;
    }),
    (err) => err instanceof assert.AssertionError && /status 500/.test(err.message),
  );
  assert.equal(calls, 1);
});

Deno.test("waitFor(): a probe that never answers fails at the deadline instead of hanging", async () => {
  const never = new Promise<boolean>(() => {});
  await assert.rejects(
    waitFor("a request that hangs", () => never, { timeoutMs: 100 }),
    /Timed out after 100 ms waiting for a request that hangs \(last error: .*a probe of a request that hangs to answer/,
  );
});
