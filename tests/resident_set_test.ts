/**
 * Several models resident at once, by memory budget, on real containers: look-alikes on
 * ports of their own declaring 10, 10 and 30 GB on a 40 GB budget. What fits stays up;
 * what does not stops the fewest, least recently used models; and Docker's own event stream
 * never shows more declared memory running than the budget, or two containers on one port.
 */
import assert from "node:assert/strict";
import OpenAI from "openai";
import { seededRandom } from "../sim/make_traces.ts";
import { chatBody, getJson, pause, post } from "./support/client.ts";
import { containerStarts, followRunning } from "./support/docker_env.ts";
import type { FakeModelSpec } from "./support/fake_models.ts";
import { withHomelabProxy } from "./support/proxy.ts";
import { CapturedLog } from "./support/log_capture.ts";

const SMALL_AND_BIG: FakeModelSpec[] = [
  { id: "small-a", ownPort: true, memoryGb: 10 },
  { id: "small-b", ownPort: true, memoryGb: 10 },
  { id: "big", ownPort: true, memoryGb: 30 },
];
const BUDGET = "memory_budget: 40\nnum_workers: 2";
const ADMIN_KEY = "resident-admin-key-0123";

Deno.test("budget 40 GB: traffic alternating between two 10 GB models keeps both running, no swap after warm-up", async () => {
  await withHomelabProxy(SMALL_AND_BIG, BUDGET, async ({ api, lab, proxy }) => {
    assert.equal((await post(proxy.url, chatBody("small-a"))).status, 200);
    assert.equal((await post(proxy.url, chatBody("small-b"))).status, 200);
    const since = Date.now();
    const client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const answers: Promise<string>[] = [];
    for (let i = 0; i < 20; i++) {
      const model = i % 2 === 0 ? "small-a" : "small-b";
      answers.push(
        i % 4 < 2
          ? client.chat.completions.create({
            model,
            messages: [{ role: "user", content: "hi" }],
          }).then((answer) => answer.model)
          : post(proxy.url, chatBody(model)).then(async (res) => (await res.json()).model),
      );
      await pause(30); // staggered, as from people typing
    }
    assert.deepEqual(
      await Promise.all(answers),
      Array.from({ length: 20 }, (_, i) => i % 2 === 0 ? "small-a" : "small-b"),
    );
    assert.deepEqual(await containerStarts(api, lab.prefix, since), []);
    assert.deepEqual(
      (await lab.running()).sort(),
      [lab.containerOf("small-a"), lab.containerOf("small-b")],
    );
    const health = (await getJson(`${proxy.url}/health`)).body;
    assert.deepEqual([...health.resident_models as string[]].sort(), ["small-a", "small-b"]);
  });
});

Deno.test("budget 40 GB with two 10 GB models up: a request for the 30 GB one stops exactly the least recently used", async () => {
  const log = new CapturedLog();
  await withHomelabProxy(
    SMALL_AND_BIG,
    `${BUDGET}\nadmin_key: ${ADMIN_KEY}`,
    async ({ api, lab, proxy }) => {
      assert.equal((await post(proxy.url, chatBody("small-b"))).status, 200);
      assert.equal((await post(proxy.url, chatBody("small-a"))).status, 200);
      assert.equal((await post(proxy.url, chatBody("small-b"))).status, 200); // a is now the LRU
      const since = Date.now();
      const res = await post(proxy.url, chatBody("big"));
      assert.equal(res.status, 200);
      assert.equal((await res.json()).model, "big");
      assert.deepEqual(await containerStarts(api, lab.prefix, since), [lab.containerOf("big")]);
      assert.deepEqual(
        (await lab.running()).sort(),
        [lab.containerOf("big"), lab.containerOf("small-b")],
      );
      assert.deepEqual(log.of("evict").map((e) => e.fields.model), ["small-a"]);
      // small-b kept serving without a load.
      const again = Date.now();
      assert.equal((await post(proxy.url, chatBody("small-b"))).status, 200);
      assert.deepEqual(await containerStarts(api, lab.prefix, again), []);
      const metrics = (await getJson(`${proxy.url}/metrics`)).body;
      assert.equal(metrics.memory_budget_gb, 40);
      assert.deepEqual(
        (metrics.resident_models as { model: string }[]).map((r) => r.model).sort(),
        ["big", "small-b"],
      );
      const prom = await (await fetch(`${proxy.url}/metrics?format=prometheus`)).text();
      assert.match(prom, /lqp_model_loaded\{model="big"\} 1/);
      assert.match(prom, /lqp_model_loaded\{model="small-b"\} 1/);
      assert.match(prom, /lqp_model_loaded\{model="small-a"\} 0/);
      const listed = (await getJson(`${proxy.url}/v1/models`)).body.data as {
        id: string;
        loaded: boolean;
      }[];
      assert.deepEqual(listed.filter((m) => m.loaded).map((m) => m.id).sort(), ["big", "small-b"]);
      const dashboard = (await getJson(`${proxy.url}/dashboard/state`)).body;
      assert.equal(dashboard.memory_budget_gb, 40);
      assert.deepEqual(
        (dashboard.resident as { model: string; memory_gb: number }[])
          .map((r) => [r.model, r.memory_gb]).sort(),
        [["big", 30], ["small-b", 10]],
      );
      // The admin unloads one resident by name; the other stays up.
      const unload = await fetch(`${proxy.url}/admin/unload`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "small-b" }),
      });
      assert.deepEqual(await unload.json(), { unloaded: "small-b", unloaded_models: ["small-b"] });
      assert.deepEqual(await lab.running(), [lab.containerOf("big")]);
    },
    { log },
  );
});

Deno.test("budget 40 GB, 500 staggered mixed requests and a chaos loop: at every Docker event the running models fit the budget and no two share a port; every client gets one answer or one clear error", async () => {
  const specs: FakeModelSpec[] = [
    { id: "small-a", ownPort: true, memoryGb: 10, slots: 4, tokenMs: 5, loadMs: 100 },
    { id: "small-b", ownPort: true, memoryGb: 10, slots: 4, tokenMs: 5, loadMs: 100 },
    { id: "big", ownPort: true, memoryGb: 30, slots: 4, tokenMs: 5, loadMs: 200 },
    // Shares the lab's common port with "shared-y": never up together.
    { id: "shared-x", memoryGb: 5, slots: 4, tokenMs: 5, loadMs: 100 },
    { id: "shared-y", memoryGb: 5, slots: 4, tokenMs: 5, loadMs: 100 },
  ];
  const config = `${BUDGET}\nqueue_size: 600\nrequest_timeout: 60\nscheduler:\n  max_wait: 2`;
  // No preload: nothing starts before the follower listens.
  await withHomelabProxy(specs, config, async ({ api, lab, proxy }) => {
    const memory = new Map(specs.map((s) => [lab.containerOf(s.id), s.memoryGb!]));
    const port = new Map(specs.map((s) => [lab.containerOf(s.id), lab.portOf(s.id)]));
    const violations: string[] = [];
    const follower = await followRunning(api, lab, (running, { action, name }) => {
      const event = `${action} ${name}`;
      const names = [...running];
      const gb = names.reduce((sum, name) => sum + (memory.get(name) ?? 0), 0);
      if (gb > 40) violations.push(`${event}: ${gb} GB running (${names.join(", ")})`);
      const ports = names.map((name) => port.get(name));
      if (new Set(ports).size < ports.length) {
        violations.push(`${event}: two containers on one port (${names.join(", ")})`);
      }
    });
    const rand = seededRandom(40);
    let chaosOn = true;
    let kills = 0;
    const chaos = (async () => {
      while (chaosOn) {
        await pause(500 + rand() * 500);
        const up = await lab.running();
        const victim = up[Math.floor(rand() * up.length)];
        if (victim === undefined || !chaosOn) continue;
        await lab.kill(victim);
        kills++;
      }
    })();
    const models = specs.map((s) => s.id);
    const weights = [0.3, 0.3, 0.1, 0.15, 0.15];
    const pickModel = () => {
      let r = rand();
      for (let i = 0; i < models.length; i++) if ((r -= weights[i]) < 0) return models[i];
      return models[0];
    };
    const outcomes: Promise<"answer" | "error">[] = [];
    for (let i = 0; i < 500; i++) {
      const model = pickModel();
      outcomes.push(
        post(proxy.url, chatBody(model, { fake_tokens: 3 })).then(async (res) => {
          const body = await res.json();
          if (res.status === 200 && body.model === model) return "answer";
          assert.ok(
            res.status >= 400 && typeof body.error?.message === "string",
            `${res.status} ${JSON.stringify(body)}`,
          );
          return "error";
        }),
      );
      if (i % 10 === 9) await pause(20 + rand() * 60); // arrivals in small bursts
    }
    const settled = await Promise.all(outcomes);
    chaosOn = false;
    await chaos;
    const events = await follower.stop();
    assert.deepEqual(violations, []);
    assert.equal(settled.length, 500);
    assert.ok(kills >= 3, `only ${kills} backends were killed`);
    assert.ok(events >= 10, `only ${events} Docker events`);
    const answers = settled.filter((o) => o === "answer").length;
    assert.ok(answers >= 100, `only ${answers} of 500 got an answer`);
    const metrics = (await getJson(`${proxy.url}/metrics`)).body;
    assert.equal(metrics.active_workers, 0);
  });
});
