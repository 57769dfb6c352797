/**
 * Chat UIs hide SSE comments, so a person watching a 3-minute swap sees a frozen chat. Models
 * with `wait_feedback: reasoning` send the wait as reasoning_content, which Open WebUI and
 * others show in their thinking box; everything else keeps invisible comments.
 */
import assert from "node:assert/strict";
import OpenAI from "openai";
import { chatBody, post, SseReader } from "./support/client.ts";
import { withHomelabProxy } from "./support/proxy.ts";

Deno.test("wait_feedback: reasoning shows the wait as reasoning_content, then the answer follows", async () => {
  const specs = [
    { id: "thinky", loadMs: 1200, waitFeedback: "reasoning" as const },
    { id: "quiet", loadMs: 600 },
  ];
  await withHomelabProxy(specs, "keepalive_interval: 0.2", async ({ proxy }) => {
    const reader = new SseReader(await post(proxy.url, chatBody("thinky", { stream: true })));
    const events = await reader.rest();
    const chunks = events.filter((e) => e.data !== undefined && e.data !== "[DONE]")
      .map((e) => JSON.parse(e.data!));
    assert.equal(events.filter((e) => e.comment !== undefined).length, 0, "no hidden comments");
    const notes = chunks.filter((c) => c.choices[0]?.delta?.reasoning_content !== undefined);
    assert.ok(notes.length >= 2, `expected several progress notes, got ${notes.length}`);
    assert.equal(notes[0].choices[0].delta.role, "assistant");
    assert.equal(notes[0].object, "chat.completion.chunk");
    assert.equal(notes[0].model, "thinky");
    const said = notes.map((n) => n.choices[0].delta.reasoning_content).join("");
    assert.match(said, /^queued position=1 eta=\d+s\n/);
    assert.match(said, /loading model thinky \d+s position=1 eta=\d+s\n/);
    const content = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
    assert.ok(content.length > 0, "the model's answer follows the notes");
    assert.ok(chunks.indexOf(notes.at(-1)) < chunks.findIndex((c) => c.choices[0]?.delta?.content));

    // Another model, and /v1/completions of this one: comments, as before.
    const quiet = await new SseReader(await post(proxy.url, chatBody("quiet", { stream: true })))
      .rest();
    assert.ok(quiet.some((e) => e.comment?.startsWith("loading model quiet")));
    assert.ok(!quiet.some((e) => e.data?.includes("reasoning_content")));
    const text = await new SseReader(
      await post(proxy.url, { model: "thinky", prompt: "hi", stream: true }, {
        path: "/v1/completions",
      }),
    ).rest();
    assert.ok(text.some((e) => e.comment?.startsWith("loading model thinky")));
    assert.ok(!text.some((e) => e.data?.includes("reasoning_content")));
  });
});

Deno.test("the official OpenAI client reads a stream that began with reasoning notes", async () => {
  const specs = [{ id: "thinky", loadMs: 800, waitFeedback: "reasoning" as const }];
  await withHomelabProxy(specs, "keepalive_interval: 0.2", async ({ proxy }) => {
    const client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: "unused" });
    const stream = await client.chat.completions.create({
      model: "thinky",
      messages: [{ role: "user", content: "hi" }],
      stream: true,
    });
    let reasoning = "";
    let content = "";
    for await (const chunk of stream) {
      const delta = chunk.choices[0]?.delta as { content?: string; reasoning_content?: string };
      reasoning += delta?.reasoning_content ?? "";
      content += delta?.content ?? "";
    }
    assert.match(reasoning, /loading model thinky/);
    assert.ok(content.length > 0);
  });
});
