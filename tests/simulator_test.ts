/**
 * The scheduler in the simulator: the targets on the shipped traces (exact and
 * repeatable, virtual clock), and properties over seeded random traces.
 */
import assert from "node:assert/strict";
import { decideAffinity, decideFifo, decideGreedy, type Priority } from "../lib/scheduler.ts";
import { seededRandom } from "../sim/make_traces.ts";
import { runTask } from "./support/deno_task.ts";
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

Deno.test("every shipped trace: no job waits past the documented bound", () => {
  for (const name of ["a-interactive-mix", "b-batch-burst", "c-alternation", "d-rare-giant"]) {
    const trace = shipped(name);
    const result = simulate(trace, decideAffinity);
    for (const priority of ["interactive", "batch"] as Priority[]) {
      const max = waitStats(result.waits[priority]).max;
      assert.ok(max <= waitBoundMs(trace, priority), `${name} ${priority}: ${max} ms`);
    }
  }
});

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
      const admitted = trace.requests.length - result.rejected;
      assert.equal(result.servedOrder.length, admitted, `${name} seed ${seed}`);
      assert.equal(new Set(result.servedOrder).size, admitted, `${name} seed ${seed} served twice`);
    }
  }
});

Deno.test("property: affinity keeps every wait under the documented bound", () => {
  for (let seed = 1; seed <= 150; seed++) {
    const trace = randomTrace(seed);
    const result = simulate(trace, decideAffinity);
    for (const priority of ["interactive", "batch"] as Priority[]) {
      const max = waitStats(result.waits[priority]).max;
      assert.ok(max <= waitBoundMs(trace, priority), `seed ${seed} ${priority}: ${max} ms`);
    }
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
