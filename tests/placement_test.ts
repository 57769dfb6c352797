import assert from "node:assert/strict";
import {
  type Capacity,
  capacityOf,
  endpointOf,
  fitsTogether,
  sharedEndpoints,
  victimsFor,
} from "../lib/placement.ts";

/** Models with declared GB, each on its own port unless `port` says otherwise. */
function capacity(budgetGb: number | null, memory: Record<string, number>, port = {}): Capacity {
  const ports: Record<string, string> = port;
  return {
    budgetGb,
    footprint: (model) => ({ memoryGb: memory[model], endpoint: ports[model] ?? model }),
  };
}

const at = (entries: [string, number][]) =>
  entries.map(([model, lastUsed]) => ({ model, lastUsed }));

Deno.test("victimsFor(): nothing stops when the target fits beside the residents", () => {
  const cap = capacity(40, { a: 10, b: 10, big: 30 });
  assert.deepEqual(victimsFor("b", at([["a", 1]]), cap), []);
});

Deno.test("victimsFor(): the least recently used resident makes room when one suffices", () => {
  const cap = capacity(40, { a: 10, b: 10, big: 30 });
  assert.deepEqual(victimsFor("big", at([["a", 5], ["b", 9]]), cap), ["a"]);
  assert.deepEqual(victimsFor("big", at([["a", 9], ["b", 5]]), cap), ["b"]);
});

Deno.test("victimsFor(): the fewest models go, even when a more recently used one must", () => {
  // 3 GB + 5 GB used long ago would make 8 GB; the recent 20 GB model alone makes more.
  const cap = capacity(30, { small: 3, mid: 5, large: 20, target: 20 });
  const residents = at([["small", 1], ["mid", 2], ["large", 9]]);
  assert.deepEqual(victimsFor("target", residents, cap), ["large"]);
});

Deno.test("victimsFor(): a resident on the target's port always goes, whatever the memory", () => {
  const cap = capacity(100, { a: 10, b: 10, c: 10 }, { a: "h:1", b: "h:1", c: "h:2" });
  assert.deepEqual(victimsFor("b", at([["c", 1], ["a", 9]]), cap), ["a"]);
});

Deno.test("victimsFor(): without a budget, one model at a time: every other resident goes", () => {
  const cap = capacity(null, { a: 10, b: 10 });
  assert.deepEqual(victimsFor("b", at([["a", 1]]), cap), ["a"]);
  assert.deepEqual(victimsFor("a", at([["a", 1]]), cap), []);
});

Deno.test("fitsTogether() counts memory against the budget and refuses a shared port", () => {
  const cap = capacity(40, { a: 10, b: 10, big: 30 }, { a: "h:1", b: "h:1" });
  assert.equal(fitsTogether(["a", "big"], cap), true);
  assert.equal(fitsTogether(["a", "b"], cap), false); // same port
  assert.equal(fitsTogether(["b", "big", "a"], cap), false);
});

Deno.test("endpointOf() folds loopback names and default ports; sharedEndpoints() groups them", () => {
  assert.equal(endpointOf("http://localhost:8080/v1"), endpointOf("http://127.0.0.1:8080"));
  assert.equal(endpointOf("http://gpu-box/v1"), "gpu-box:80");
  const models = [
    { id: "a", backendUrl: "http://localhost:8080/v1" },
    { id: "b", backendUrl: "http://127.0.0.1:8080/v1" },
    { id: "c", backendUrl: "http://localhost:8081/v1" },
  ];
  assert.deepEqual([...sharedEndpoints(models)], [["localhost:8080", ["a", "b"]]]);
  const cap = capacityOf({
    memoryBudgetGb: 100,
    models: models.map((m) => ({ ...m, memoryGb: 10 })),
  });
  assert.equal(fitsTogether(["a", "c"], cap), true);
  assert.equal(fitsTogether(["a", "b"], cap), false);
});
