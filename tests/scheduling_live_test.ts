/**
 * The scheduler on the real dispatcher, with Docker and traffic that arrives staggered as it does
 * from real clients (never all queued before the scheduler looks): a swap decided while the
 * loaded model is busy waits for new work of that model unless its target is due, and a due
 * target gets its swap then, ahead of everything still waiting for the loaded model.
 */
import assert from "node:assert/strict";
import OpenAI from "openai";
import { CapturedLog } from "./support/log_capture.ts";
import { chatBody, getJson, pause, post } from "./support/client.ts";
import { containerStarts } from "./support/docker_env.ts";
import { withHomelabProxy } from "./support/proxy.ts";
import { waitFor } from "./support/wait_for.ts";

Deno.test("A busy, then B,A,B,A,B,A 30 ms apart from the openai client: the A's run on A, then exactly one container start", async () => {
  await withHomelabProxy(
    [{ id: "acc-a" }, { id: "acc-b" }],
    "num_workers: 1",
    async ({ api, lab, proxy }) => {
      assert.equal((await post(proxy.url, chatBody("acc-a"))).status, 200); // A loaded
      const client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: "unused", maxRetries: 0 });
      const ask = (model: string, extra: Record<string, unknown> = {}) =>
        client.chat.completions.create({
          model,
          messages: [{ role: "user", content: "hi" }],
          ...extra,
        } as OpenAI.ChatCompletionCreateParamsNonStreaming);
      const since = Date.now();
      // A busy for ~0.8 s with one request.
      const busy = ask("acc-a", { fake_tokens: 8, fake_token_ms: 100 });
      await waitFor("A busy", async () => (await lab.state()).inflight === 1);
      const answers = [];
      for (const model of ["acc-b", "acc-a", "acc-b", "acc-a", "acc-b", "acc-a"]) {
        answers.push(ask(model));
        await pause(30); // the traffic's shape, not a wait for anything
      }
      await busy;
      const models = (await Promise.all(answers)).map((answer) => answer.model);
      assert.deepEqual(models, ["acc-b", "acc-a", "acc-b", "acc-a", "acc-b", "acc-a"]);
      assert.deepEqual(await containerStarts(api, lab.prefix, since), [lab.containerOf("acc-b")]);
    },
  );
});

Deno.test("A streaming with A and B requests arriving every 200 ms: once B waited max_wait, B's swap comes before A's long queue", async () => {
  const log = new CapturedLog();
  await withHomelabProxy(
    [{ id: "a" }, { id: "b" }],
    "num_workers: 1\nscheduler:\n  max_wait: 2",
    async ({ lab, proxy }) => {
      // A's requests take about a second (what the dispatcher learns from this one), so the A queue
      // that builds up behind the stream is long: B's due swap does not wait for it (rule 3c
      // lets only a queue cleared within max_wait go first).
      const warmUp = chatBody("a", { fake_tokens: 10, fake_token_ms: 100 });
      assert.equal((await post(proxy.url, warmUp)).status, 200);
      const stream = post(proxy.url, chatBody("a", { stream: true, fake_hold: true }));
      await waitFor("A streaming", async () => (await lab.state()).inflight === 1);
      const sent: Promise<Response>[] = [];
      let bWaited = 0;
      // Both kinds keep coming until B's first request has waited max_wait (2 s).
      while (bWaited < 2) {
        sent.push(post(proxy.url, chatBody("a")), post(proxy.url, chatBody("b")));
        await pause(200);
        const queue = (await getJson(`${proxy.url}/queue`)).body as {
          jobs: { model: string; waited_s: number }[];
        };
        bWaited = queue.jobs.find((job) => job.model === "b")?.waited_s ?? 0;
      }
      await lab.release(); // the stream ends; nothing else ran meanwhile (one worker)
      await stream.then((res) => res.text());
      for (const res of await Promise.all(sent)) assert.equal(res.status, 200);
      // After A's stream, the next request served is B's: the A's that queued behind the
      // stream waited for B's turn instead of pushing it back.
      const order = log.of("request").map((entry) => entry.fields);
      const streamAt = order.findIndex((line) => line.stream === true);
      assert.equal(order[streamAt + 1].model, "b", JSON.stringify(order.map((l) => l.model)));
      assert.ok(
        order.slice(streamAt + 1).some((line) => line.model === "a"),
        "A's queue came after",
      );
    },
    { log },
  );
});

Deno.test("A busy, B's only request cancelled while the swap to B waits for A: /queue stops naming B and B never starts", async () => {
  await withHomelabProxy(
    [{ id: "a" }, { id: "b" }],
    "num_workers: 1",
    async ({ api, lab, proxy }) => {
      assert.equal((await post(proxy.url, chatBody("a"))).status, 200); // A loaded
      const since = Date.now();
      const held = post(proxy.url, chatBody("a", { stream: true, fake_hold: true }));
      await waitFor("A busy", async () => (await lab.state()).inflight === 1);
      const queue = async () =>
        (await getJson(`${proxy.url}/queue`)).body as {
          switching_to: string | null;
          jobs: unknown[];
        };
      const leaving = new AbortController();
      const forB = post(proxy.url, chatBody("b"), { signal: leaving.signal }).catch(() => null);
      await waitFor("the swap to B decided, waiting for A", async () => {
        return (await queue()).switching_to === "b";
      });
      leaving.abort();
      await forB;
      await waitFor("B's request gone and no switch named", async () => {
        const view = await queue();
        return view.jobs.length === 0 && view.switching_to === null;
      });
      await lab.release();
      await held.then((res) => res.text());
      assert.deepEqual(await containerStarts(api, lab.prefix, since), []);
    },
  );
});
