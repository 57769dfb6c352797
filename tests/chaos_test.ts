/**
 * Load with faults: 500 concurrent clients across 3 models while a chaos loop kills the
 * loaded backend now and then. Every client must get exactly one complete answer or one
 * clear error, none may hang past request_timeout, and Docker must never show two model
 * containers running.
 */
import assert from "node:assert/strict";
import { seededRandom } from "../sim/make_traces.ts";
import { chatBody, post, SseReader } from "./support/client.ts";
import { sampleRunning, withHomelabProxy } from "./support/proxy.ts";

type Outcome = "answer" | "error";

/** One client: a complete answer, or an error it was clearly told about. */
async function client(url: string, model: string, stream: boolean): Promise<Outcome> {
  const res = await post(url, chatBody(model, { stream, fake_tokens: 3 }));
  if (!stream || res.headers.get("content-type") !== "text/event-stream") {
    const body = await res.json();
    if (res.status === 200 && body.choices?.[0]?.message) return "answer";
    assert.ok(res.status >= 400 && typeof body.error?.message === "string", JSON.stringify(body));
    return "error";
  }
  const events = await new SseReader(res).rest();
  const last = events.at(-1)?.data;
  if (last === "[DONE]") return "answer";
  assert.ok(last !== undefined && JSON.parse(last).error?.message, `stream ended: ${last}`);
  return "error";
}

Deno.test("500 clients, 3 models, backends killed now and then: one answer or one clear error each", async () => {
  const specs = ["a", "b", "c"].map((id) => ({ id, slots: 4, tokenMs: 5, loadMs: 100 }));
  const config = "num_workers: 4\nqueue_size: 600\nrequest_timeout: 60\n" +
    "scheduler:\n  max_wait: 2";
  await withHomelabProxy(specs, config, async ({ api, lab, proxy }) => {
    const sampler = sampleRunning(() => lab.running());
    const rand = seededRandom(500);
    let chaosOn = true;
    let kills = 0;
    const chaos = (async () => {
      for (let round = 0; chaosOn && round < 40; round++) {
        await new Promise((r) => setTimeout(r, 400 + rand() * 400));
        const [victim] = await lab.running();
        if (!victim || !chaosOn) continue;
        await (await api.request("POST", `/containers/${victim}/kill?signal=SIGKILL`)).body
          ?.cancel();
        kills++;
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
    const { samples, maxRunning } = await sampler.stop();

    const answers = outcomes.filter((o) => o === "answer").length;
    assert.equal(outcomes.length, 500);
    assert.ok(kills >= 3, `only ${kills} backends were killed`);
    // A kill during a load fails that model's waiting jobs (503 with the log tail), so the
    // share of answers varies from run to run (320–500 seen); most must still be served.
    assert.ok(answers >= 100, `only ${answers} of 500 got an answer`);
    assert.ok(samples > 20, `Docker sampled only ${samples} times`);
    assert.equal(maxRunning, 1, "two model containers ran at once");
    await proxy.storeSettled(); // the store's records follow the answers by a few ms
    const metrics = await (await fetch(`${proxy.url}/metrics`)).json();
    assert.equal(metrics.queue_stats.pending_jobs, 0);
    assert.equal(metrics.active_workers, 0);
  });
});
