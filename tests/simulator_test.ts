/**
 * The scheduler in the simulator: the targets on the shipped traces (exact and
 * repeatable, virtual clock), and properties over seeded random traces.
 */
import assert from "node:assert/strict";
import { decideAffinity, decideFifo, decideGreedy } from "../lib/scheduler.ts";
import type { Priority } from "../lib/priority.ts";
import { seededRandom } from "../sim/make_traces.ts";
import { runTask } from "./support/deno_task.ts";
import {
  maxWaitServiceMs,
  minLoads,
  minWorstWaitInOrderMs,
  NIGHT_BATCH_INTERRUPTING,
} from "../sim/bounds.ts";
import {
  parseTrace,
  simulate,
  type Trace,
  type TraceRequest,
  waitBoundMs,
  waitStats,
} from "../sim/simulate.ts";

function shipped(name: string): Trace {
  return parseTrace(Deno.readTextFileSync(new URL(`../sim/traces/${name}.jsonl`, import.meta.url)));
}

function all(trace: Trace) {
  return {
    fifo: simulate(trace, decideFifo),
    greedy: simulate(trace, decideGreedy),
    affinity: simulate(trace, decideAffinity),
  };
}

Deno.test("trace (a) interactive mix: affinity swaps 3x less and waits 2x less than fifo", () => {
  const { fifo, greedy, affinity } = all(shipped("a-interactive-mix"));
  const fifoWait = waitStats(fifo.waits.interactive);
  const wait = waitStats(affinity.waits.interactive);
  assert.ok(fifo.swaps >= 3 * affinity.swaps, `swaps fifo ${fifo.swaps} vs ${affinity.swaps}`);
  assert.ok(fifoWait.mean >= 2 * wait.mean, `mean wait fifo ${fifoWait.mean} vs ${wait.mean}`);
  assert.ok(wait.p95 <= fifoWait.p95, `p95 ${wait.p95} vs fifo ${fifoWait.p95}`);
  assert.ok(
    affinity.swaps <= 1.2 * greedy.swaps,
    `swaps ${affinity.swaps} vs greedy ${greedy.swaps}`,
  );
});

Deno.test("trace (b) batch burst: interactive max wait a third of greedy's, swaps within 1.5x", () => {
  const { greedy, affinity } = all(shipped("b-batch-burst"));
  const max = waitStats(affinity.waits.interactive).max;
  const greedyMax = waitStats(greedy.waits.interactive).max;
  assert.ok(max * 3 <= greedyMax, `interactive max wait ${max} vs greedy ${greedyMax}`);
  assert.ok(
    affinity.swaps <= 1.5 * greedy.swaps,
    `swaps ${affinity.swaps} vs greedy ${greedy.swaps}`,
  );
});

Deno.test("trace (c) alternation: swaps bounded by elapsed time / max_wait + 1", () => {
  const trace = shipped("c-alternation");
  const { fifo, affinity } = all(trace);
  const bound = affinity.makespanMs / (trace.header.scheduler.max_wait * 1000) + 1;
  assert.ok(affinity.swaps <= bound, `${affinity.swaps} swaps, bound ${bound}`);
  assert.equal(fifo.swaps, trace.requests.length); // the seed's cost: one per request
});

Deno.test("trace (e) family evening: affinity's interactive mean and worst wait are at most greedy's", () => {
  const { greedy, affinity } = all(shipped("e-family-evening"));
  const g = waitStats(greedy.waits.interactive), a = waitStats(affinity.waits.interactive);
  assert.ok(a.mean <= g.mean, `mean ${a.mean} vs greedy ${g.mean}`);
  assert.ok(a.max <= g.max, `worst ${a.max} vs greedy ${g.max}`);
});

Deno.test("trace (g) night batch: chats and the giant wait at most 0.55x greedy's worst behind 600 batch lines", () => {
  const { greedy, affinity } = all(shipped("g-night-batch"));
  const worst = waitStats(affinity.waits.interactive).max;
  const greedyWorst = waitStats(greedy.waits.interactive).max;
  assert.ok(worst <= 0.55 * greedyWorst, `worst ${worst} vs greedy ${greedyWorst}`);
});

/** Models a and b on one worker, with one load time, stop time and max_wait. */
function oneWorkerAB(
  requests: TraceRequest[],
  { loadS, stopS, maxWaitS }: { loadS: number; stopS: number; maxWaitS: number },
): Trace {
  return {
    header: {
      name: "a-and-b",
      num_workers: 1,
      queue_size: 1000,
      stop_s: stopS,
      models: { a: { load_s: loadS }, b: { load_s: loadS } },
      scheduler: { max_wait: maxWaitS, batch_aging: 600 },
    },
    requests,
  };
}

Deno.test("a bounded wait costs worst wait under overload: two 300-request lines arriving at once", () => {
  // One worker, 100 s loads, max_wait 10 s: 300 one-second requests for A, then 300 for B.
  const requests: TraceRequest[] = [];
  for (const [model, t] of [["a", 0], ["b", 0.001]] as const) {
    for (let i = 0; i < 300; i++) requests.push({ t, model, priority: "interactive", service: 1 });
  }
  const trace = oneWorkerAB(requests, { loadS: 100, stopS: 0, maxWaitS: 10 });
  const { greedy, affinity } = all(trace);
  // Greedy serves A's line whole, then B's: the last B request starts after 2 loads and 599 s.
  assert.deepEqual(greedy.loads, ["a", "b"]);
  assert.equal(Math.round(waitStats(greedy.waits.interactive).max / 1000), 799);
  // Serving B within its bound means leaving A's line before it is empty, so A loads again:
  // with 3 loads or more, whatever the order, the last request starts after ≥ 300 s of loads
  // and 599 s of other requests. Affinity keeps the bound and pays that.
  assert.ok(affinity.loads.length >= 3, affinity.loads.join(","));
  assert.ok(waitStats(affinity.waits.interactive).max >= 899_000 - 1);
});

Deno.test("a bounded wait costs swaps greedy does not make: one B request behind a busy A", () => {
  // One worker; A's line never empties for 10 minutes; one B request at t=1 s.
  const requests: TraceRequest[] = [{ t: 1, model: "b", priority: "interactive", service: 5 }];
  for (let t = 0; t < 600; t += 5) {
    requests.push({ t, model: "a", priority: "interactive", service: 8 });
  }
  const trace = oneWorkerAB(requests.sort((x, y) => x.t - y.t), {
    loadS: 10,
    stopS: 1,
    maxWaitS: 60,
  });
  const { greedy, affinity } = all(trace);
  const waitOfB = (r: ReturnType<typeof simulate>) => r.waits.interactive[r.servedOrder.indexOf(1)];
  assert.deepEqual(greedy.loads, ["a", "b"]); // B served after the whole stream
  assert.ok(waitOfB(greedy) > 600_000, `greedy's B waited ${waitOfB(greedy)} ms`);
  assert.ok(affinity.swaps > greedy.swaps, `${affinity.swaps} vs ${greedy.swaps}`);
  // A was ready at 10 s and stays max_wait; A's backlog is short then (rule 3c), so B waits
  // at most one more max_wait; then the A request in flight ends; then B's stop + load: served
  // by 149 s.
  assert.ok(
    waitOfB(affinity) <= (10 + 60 + 60 + 8 + 11) * 1000,
    `affinity's B waited ${waitOfB(affinity)} ms`,
  );
});

Deno.test("every shipped trace: no job waits past the documented bound", () => {
  for (
    const name of [
      "a-interactive-mix",
      "b-batch-burst",
      "c-alternation",
      "d-rare-giant",
      "e-family-evening",
      "f-agent-fanout",
      "g-night-batch",
      "e-family-evening-24gb",
      "f-agent-fanout-24gb",
    ]
  ) {
    assertWithinBound(shipped(name), name);
  }
});

/** Every admitted job of `trace` was served, and none twice. */
function assertServedOnce(trace: Trace, result: ReturnType<typeof simulate>, label: string) {
  const admitted = trace.requests.length - result.rejected;
  assert.equal(result.servedOrder.length, admitted, label);
  assert.equal(new Set(result.servedOrder).size, admitted, `${label}: served twice`);
}

/** Under affinity, no job of `trace` waits past the documented bound of its class. */
function assertWithinBound(trace: Trace, label: string) {
  const result = simulate(trace, decideAffinity);
  for (const priority of ["interactive", "batch"] as Priority[]) {
    const max = waitStats(result.waits[priority]).max;
    assert.ok(max <= waitBoundMs(trace, priority), `${label} ${priority}: ${max} ms`);
  }
}

/** A random but valid trace: 2–5 models, 1–3 workers, mixed classes, bursts and lulls. */
function randomTrace(seed: number): Trace {
  const rand = seededRandom(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
  const modelCount = int(2, 5);
  const models = Object.fromEntries(
    Array.from({ length: modelCount }, (_, i) => [`m${i}`, { load_s: int(1, 180) }]),
  );
  const requests: TraceRequest[] = [];
  let t = 0;
  for (let i = int(20, 200); i > 0; i--) {
    t += rand() < 0.3 ? 0 : rand() * int(1, 60); // bursts of simultaneous arrivals
    requests.push({
      t: Math.round(t * 1000) / 1000,
      model: `m${int(0, modelCount - 1)}`,
      priority: rand() < 0.3 ? "batch" : "interactive",
      service: int(1, 60),
    });
  }
  return {
    header: {
      name: `random-${seed}`,
      num_workers: int(1, 3),
      queue_size: int(5, 60),
      stop_s: int(0, 10),
      models,
      scheduler: {
        max_wait: int(5, 120),
        min_residency: rand() < 0.5 ? undefined : int(1, 120),
        batch_aging: int(30, 900),
      },
    },
    requests,
  };
}

Deno.test("property: every admitted job is served exactly once, under every policy", () => {
  for (let seed = 1; seed <= 150; seed++) {
    const trace = randomTrace(seed);
    for (const [name, result] of Object.entries(all(trace))) {
      assertServedOnce(trace, result, `${name} seed ${seed}`);
    }
  }
});

Deno.test("property: affinity keeps every wait under the documented bound", () => {
  for (let seed = 1; seed <= 150; seed++) {
    assertWithinBound(randomTrace(seed), `seed ${seed}`);
  }
});

/** `randomTrace(seed)` on a machine where some models fit together: declared GB and a budget. */
function randomBudgetTrace(seed: number): Trace {
  const trace = randomTrace(seed);
  const rand = seededRandom(seed + 10_000);
  const budget = 8 + Math.floor(rand() * 60);
  const models = Object.fromEntries(
    Object.entries(trace.header.models).map(([id, m]) => [id, {
      ...m,
      memory: 1 + Math.floor(rand() * budget),
      parallel: 1 + Math.floor(rand() * 3),
    }]),
  );
  return { ...trace, header: { ...trace.header, memory_budget: budget, models } };
}

Deno.test("property, resident sets: every job served once, the declared memory never above the budget", () => {
  for (let seed = 1; seed <= 150; seed++) {
    const trace = randomBudgetTrace(seed);
    for (const [name, result] of Object.entries(all(trace))) {
      assertServedOnce(trace, result, `${name} seed ${seed}`);
      assert.ok(
        result.peakMemoryGb <= trace.header.memory_budget!,
        `${name} seed ${seed}: ${result.peakMemoryGb} GB of ${trace.header.memory_budget}`,
      );
    }
    assertWithinBound(trace, `seed ${seed}`);
  }
});

Deno.test("trace (e) with 24 GB (the 3B fits beside any other): ≥ 40% fewer swaps than single-model greedy, mean wait ≤ 0.6x", () => {
  const trace = shipped("e-family-evening-24gb");
  const single = simulate(shipped("e-family-evening"), decideGreedy);
  const resident = simulate(trace, decideAffinity);
  assert.ok(resident.swaps <= 0.6 * single.swaps, `${resident.swaps} vs ${single.swaps}`);
  const mean = waitStats(resident.waits.interactive).mean;
  const singleMean = waitStats(single.waits.interactive).mean;
  assert.ok(mean <= 0.6 * singleMean, `${mean} ms vs ${singleMean} ms`);
  assert.ok(resident.peakMemoryGb <= 24);
});

Deno.test("trace (f) with the coder and the 3B fitting together: two loads in the whole hour", () => {
  const result = simulate(shipped("f-agent-fanout-24gb"), decideAffinity);
  assert.deepEqual(result.loads, ["qwen3-coder-30b", "qwen2.5-3b"]);
});

Deno.test("minLoads(): requests for one model covered by windows of the allowed wait, plus the first load", () => {
  const at = (t: number, model: string): TraceRequest => ({
    t,
    model,
    priority: "interactive",
    service: 1,
  });
  const trace: Trace = {
    header: { ...randomTrace(1).header, models: { a: { load_s: 1 }, b: { load_s: 1 } } },
    requests: [at(0, "a"), at(50, "a"), at(100, "a"), at(10, "b"), at(500, "b")],
  };
  assert.equal(minLoads(trace, ["a"], 60_000), 1 + 2); // {0, 50} and {100}
  assert.equal(minLoads(trace, ["a"], 100_000), 1 + 1);
  assert.equal(minLoads(trace, ["a", "b"], 60_000), 1 + 2 + 2);
});

Deno.test("trace (g): with chats served within max_wait, no policy stays within 2x greedy's swaps", () => {
  const trace = shipped("g-night-batch");
  const greedy = simulate(trace, decideGreedy);
  const honoured = maxWaitServiceMs(trace, NIGHT_BATCH_INTERRUPTING[0]);
  assert.ok(minLoads(trace, NIGHT_BATCH_INTERRUPTING, honoured) > 2 * greedy.swaps);
});

Deno.test("trace (f) agent fan-out: affinity's worst wait is at most greedy's, and no in-order schedule reaches 0.75x greedy's", () => {
  const trace = shipped("f-agent-fanout");
  const { greedy, affinity } = all(trace);
  const greedyWorst = waitStats(greedy.waits.interactive).max;
  const worst = waitStats(affinity.waits.interactive).max;
  assert.ok(worst <= greedyWorst, `worst ${worst} vs greedy ${greedyWorst}`);
  const least = minWorstWaitInOrderMs(trace);
  assert.ok(least > 0.75 * greedyWorst, `bound ${least} vs greedy ${greedyWorst}`);
});

Deno.test("property: minWorstWaitInOrderMs() never claims more than a policy achieves on two-model traces", () => {
  let checked = 0;
  for (let seed = 1; checked < 60; seed++) {
    const random = randomTrace(seed);
    const models = Object.keys(random.header.models).slice(0, 2);
    const trace: Trace = {
      header: {
        ...random.header,
        queue_size: random.requests.length, // nobody turned away: every request waits
        models: Object.fromEntries(models.map((m) => [m, random.header.models[m]])),
      },
      requests: random.requests.map((r, i) => ({
        ...r,
        model: models[i % 2],
        priority: "interactive",
      })),
    };
    const least = minWorstWaitInOrderMs(trace);
    for (const [name, result] of Object.entries(all(trace))) {
      const worst = waitStats(result.waits.interactive).max;
      assert.ok(least <= worst, `seed ${seed} ${name}: bound ${least} > worst ${worst}`);
    }
    checked++;
  }
});

Deno.test("simulate() is deterministic", () => {
  const trace = randomTrace(7);
  assert.deepEqual(simulate(trace, decideAffinity), simulate(trace, decideAffinity));
});

Deno.test("deno task sim prints the three policies side by side for a trace", async () => {
  const { code, stdout: text, stderr } = await runTask(["sim", "sim/traces/c-alternation.jsonl"]);
  assert.equal(code, 0, stderr);
  for (const policy of ["fifo", "greedy", "affinity"]) {
    assert.match(text, new RegExp(`^\\| ${policy} +\\| +\\d+ \\|`, "m"));
  }
  assert.match(text, /\| fifo +\| +600 \|/);
});

Deno.test("deno task sim with no argument replays the shipped traces and prints the targets", async () => {
  const { code, stdout: text, stderr } = await runTask(["sim"]);
  assert.equal(code, 0, stderr);
  for (const name of ["e-family-evening", "f-agent-fanout", "g-night-batch"]) {
    assert.match(text, new RegExp(`^### ${name}:`, "m"));
  }
  assert.match(text, /^ {2}(PASS|MISS) g-night-batch: interactive worst wait ≤ 0\.55x/m);
});
