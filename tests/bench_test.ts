/**
 * The benchmark is not part of the suite, but it must not rot: its quick configuration runs
 * end to end (Docker, nginx, wrk, the proxy) and writes every section of its results.
 */
import assert from "node:assert/strict";
import { runTask } from "./support/deno_task.ts";

Deno.test("deno task bench --quick runs and reports every measurement", async () => {
  const out = await Deno.makeTempFile({ suffix: ".json" });
  try {
    const { code, stdout, stderr } = await runTask(["bench", "--quick", `--out=${out}`]);
    assert.equal(code, 0, stderr);
    assert.match(stdout, /targets:\n( {2}(PASS|MISS) .+\n?)+/);
    const results = JSON.parse(await Deno.readTextFile(out));
    for (const section of ["overhead", "streaming", "swap", "queue", "memory", "kv_cache"]) {
      assert.ok(results[section], `results.json lacks ${section}`);
    }
    for (const target of ["direct", "nginx", "deno_floor", "proxy"]) {
      assert.ok(results.overhead[`${target}_c1`].requests > 0, `${target} served no request`);
    }
    assert.ok(results.streaming.proxy.content_chunks > 0);
    assert.ok(results.kv_cache.tokens > 0, "the kv_cache bench saved nothing");
  } finally {
    await Deno.remove(out);
  }
});
