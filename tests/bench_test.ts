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
    const sections = [
      "overhead",
      "streaming",
      "many_streams",
      "swap",
      "queue",
      "memory",
      "kv_cache",
      "hostile",
      "cluster_forwarding",
    ];
    for (const section of sections) {
      assert.ok(results[section], `results.json lacks ${section}`);
    }
    for (const target of ["direct", "nginx", "deno_floor", "node_floor", "proxy"]) {
      const served = results.overhead[`${target}_c1`].median.requests;
      assert.ok(served > 0, `${target} served no request`);
    }
    assert.ok(results.streaming.proxy.median.content_chunks > 0);
    // The last part goes around Docker's port proxy, to the container's own address.
    for (const part of ["at_once", "arriving", "arriving_own_address"]) {
      const many = results.many_streams[part];
      assert.ok(
        many,
        `results.json lacks many_streams.${part}` +
          (part.endsWith("own_address")
            ? ": the container's own address was not reachable from this host (rootless Docker " +
              "or Docker Desktop?)"
            : ""),
      );
      for (const prefix of ["", "direct_", "deno_floor_"]) {
        assert.equal(
          many.min[`${prefix}complete`],
          many.median.clients,
          `${part}: a stream ${prefix || "through the proxy "}was not whole`,
        );
      }
    }
    // The part throws when a swap's answer is not 200; every round reports its times.
    assert.ok(results.swap.min.proxy_swap_p50_ms > 0, "a round of the swap part has no time");
    assert.ok(results.kv_cache.tokens > 0, "the kv_cache bench saved nothing");
    // Every request each way answered 200 by node 2, directly or through node 1, in every round.
    const forwarding = results.cluster_forwarding;
    assert.ok(forwarding.median.requests > 0);
    assert.equal(forwarding.min.local_ok, forwarding.median.requests);
    assert.equal(forwarding.min.forwarded_ok, forwarding.median.requests);
    assert.ok(forwarding.median.local_p50_ms > 0 && forwarding.median.forwarded_p50_ms > 0);
  } finally {
    await Deno.remove(out);
  }
});
