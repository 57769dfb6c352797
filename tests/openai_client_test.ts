/**
 * The official `openai` npm client against the proxy, as users' scripts and n8n drive it.
 */
import assert from "node:assert/strict";
import OpenAI from "openai";
import { withHomelabProxy } from "./support/proxy.ts";

Deno.test("openai client: list, chat, stream through a swap, and typed errors", async () => {
  await withHomelabProxy(
    [{ id: "a" }, { id: "b", loadMs: 700 }],
    "keepalive_interval: 0.1",
    async ({ proxy }) => {
      const client = new OpenAI({
        baseURL: `${proxy.url}/v1`,
        apiKey: "not-needed",
        maxRetries: 0,
      });

      const models = [];
      for await (const model of client.models.list()) models.push(model.id);
      assert.deepEqual(models, ["a", "b"]);

      const chat = await client.chat.completions.create({
        model: "a",
        messages: [{ role: "user", content: "Hello!" }],
      });
      assert.equal(chat.choices[0].message.content, " Hello from the fake");

      // b must be loaded first: the stream waits behind SSE comments, which the client ignores.
      const stream = await client.chat.completions.create({
        model: "b",
        messages: [{ role: "user", content: "Hello!" }],
        stream: true,
        stream_options: { include_usage: true },
      });
      let text = "";
      let usage: unknown = null;
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta?.content ?? "";
        usage = chunk.usage ?? usage;
      }
      assert.equal(text, " Hello from the fake");
      // "Hello!" through the chat template: three word tokens; nothing cached on a fresh model.
      assert.deepEqual(usage, {
        completion_tokens: 4,
        prompt_tokens: 3,
        total_tokens: 7,
        prompt_tokens_details: { cached_tokens: 0 },
      });

      await assert.rejects(
        client.chat.completions.create({ model: "nope", messages: [] }),
        (err) => {
          assert.ok(err instanceof OpenAI.NotFoundError);
          assert.equal(err.code, "model_not_found");
          return true;
        },
      );
    },
  );
});
