/**
 * Load with faults: 500 concurrent clients across 3 models while a chaos loop kills the
 * running backend now and then: while it serves, and right as it starts loading. Every client
 * must get exactly one whole answer or one clear error, none may hang past request_timeout,
 * and Docker's own event stream must never show two model containers running. Kills are
 * recovered: a request whose backend died before its first byte is retried, a load whose
 * container was killed is started again; only streams already under way when their backend
 * died can fail, so at least 95% are answered.
 */
import assert from "node:assert/strict";
import { seededRandom } from "../sim/make_traces.ts";
import { chatBody, post, SseReader } from "./support/client.ts";
import { withHomelabProxy } from "./support/proxy.ts";
import { followRunning } from "./support/docker_env.ts";

/** A whole answer; a stream cut after it began (its backend died); any other error. */
type Outcome = "answer" | "cut" | "error";

/** The look-alike's answer to `fake_tokens: 3`. */
const WHOLE = " Hello from the";

/** One client: a whole answer (checked word for word), or an error it was clearly told about. */
async function client(url: string, model: string, stream: boolean): Promise<Outcome> {
  const res = await post(url, chatBody(model, { stream, fake_tokens: 3 }));
  if (!stream || res.headers.get("content-type") !== "text/event-stream") {
    const body = await res.json();
    if (res.status === 200) {
      assert.equal(body.choices?.[0]?.message?.content, WHOLE, JSON.stringify(body));
      assert.equal(body.model, model);
      return "answer";
    }
    assert.ok(res.status >= 400 && typeof body.error?.message === "string", JSON.stringify(body));
    return "error";
  }
  const events = await new SseReader(res).rest();
  const data = events.flatMap((e) => e.data === undefined ? [] : [e.data]); // comments aside
  const last = data.at(-1);
  if (last === "[DONE]") {
    // Nothing sent twice, nothing cut: the content chunks make the answer exactly once.
    assert.equal(data.filter((d) => d === "[DONE]").length, 1);
    const content = data.slice(0, -1).map((d) => JSON.parse(d).choices?.[0]?.delta?.content ?? "")
      .join("");
    assert.equal(content, WHOLE, `stream content: ${JSON.stringify(data)}`);
    return "answer";
  }
  const error = last === undefined ? undefined : JSON.parse(last).error;
  assert.ok(typeof error?.message === "string", `stream ended: ${last}`);
  return error.code === "upstream_stream_broken" ? "cut" : "error";
}

Deno.test("500 clients, 3 models, backends killed while serving and while loading: one whole answer or one clear error each, only streams under way lost, ≥ 95% answered, never two containers running", async () => {
  const specs = ["a", "b", "c"].map((id) => ({ id, slots: 4, tokenMs: 5, loadMs: 300 }));
  const config = "num_workers: 4\nqueue_size: 600\nrequest_timeout: 60\n" +
    "scheduler:\n  max_wait: 2";
  await withHomelabProxy(specs, config, async ({ api, lab, proxy }) => {
    const overlaps: string[] = [];
    let killNextStart = false;
    let loadKills = 0;
    const follower = await followRunning(api, lab, (running, { action, name }) => {
      if (running.size > 1) overlaps.push(`${action} ${name}: ${[...running].join(", ")}`);
      if (killNextStart && action === "start") {
        killNextStart = false; // the next start of it is left to load
        loadKills++;
        lab.kill(name);
      }
    });
    const rand = seededRandom(500);
    let chaosOn = true;
    let serveKills = 0;
    const chaos = (async () => {
      for (let round = 0; chaosOn && round < 40; round++) {
        await new Promise((r) => setTimeout(r, 400 + rand() * 400));
        if (round % 2 === 1) {
          killNextStart = true; // a container killed while its model loads
          continue;
        }
        const [victim] = await lab.running();
        if (!victim || !chaosOn) continue;
        await lab.kill(victim);
        serveKills++;
      }
    })();
    const deadline = 60_000 + 15_000; // request_timeout plus slack: past it, a client hung
    const outcomes = await Promise.all(Array.from({ length: 500 }, (_, i) => {
      const model = ["a", "b", "c"][i % 3];
      const hung = new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error(`client ${i} hung`)), deadline)
      );
      return Promise.race([client(proxy.url, model, i % 2 === 0), hung]);
    }));
    chaosOn = false;
    await chaos;
    await follower.stop();

    const count = (o: Outcome) => outcomes.filter((x) => x === o).length;
    assert.ok(serveKills >= 3, `only ${serveKills} backends were killed while serving`);
    assert.ok(loadKills >= 1, "no backend was killed while loading");
    assert.equal(count("error"), 0, "only streams under way may fail");
    // Each kill while serving cuts at most the streams in flight on its 4 slots.
    assert.ok(count("cut") <= serveKills * 4, `${count("cut")} cut by ${serveKills} kills`);
    assert.ok(count("answer") >= 475, `only ${count("answer")} of 500 got an answer`);
    assert.deepEqual(overlaps, [], "two model containers ran at once");
    await proxy.storeSettled(); // the store's records follow the answers by a few ms
    const metrics = await (await fetch(`${proxy.url}/metrics`)).json();
    assert.equal(metrics.queue_stats.pending_jobs, 0);
    assert.equal(metrics.active_workers, 0);
  });
});
