/**
 * Warm returns with real containers: a model with `kv_cache` gets its conversations' slot KV
 * cache saved before a swap stops it and restored before its first request when it comes
 * back, so the next turn of a long conversation finds its prompt cached. Bad files, a full
 * disk budget, a server without `--slot-save-path` and a changed build each fall back to a
 * cold start without failing anything.
 */
import assert from "node:assert/strict";
import OpenAI from "openai";
import { chatBody, getJson, post } from "./support/client.ts";
import type { FakeModelSpec } from "./support/fake_models.ts";
import { type HomelabContext, withHomelabProxy } from "./support/proxy.ts";
import { CapturedLog } from "./support/log_capture.ts";

const ADMIN_KEY = "kv-cache-admin-key-0123";

/** A long first turn: a pasted file of a few thousand words. */
function longConversation(seed: string): OpenAI.ChatCompletionMessageParam[] {
  const words = Array.from({ length: 3000 }, (_, i) => `${seed}${i % 97}`).join(" ");
  return [
    { role: "system", content: "You review code." },
    { role: "user", content: `Here is the file:\n${words}\nWhat does it do?` },
  ];
}

type Usage = { prompt_tokens: number; prompt_tokens_details?: { cached_tokens?: number } };

/** One turn through the official client; returns the answer and its usage. */
async function turn(
  client: OpenAI,
  model: string,
  messages: OpenAI.ChatCompletionMessageParam[],
): Promise<{ answer: string; usage: Usage }> {
  const res = await client.chat.completions.create({ model, messages });
  return { answer: res.choices[0].message.content ?? "", usage: res.usage as Usage };
}

/** The conversation so far plus the assistant's answer and the user's next message. */
const next = (messages: OpenAI.ChatCompletionMessageParam[], answer: string) => [
  ...messages,
  { role: "assistant" as const, content: answer },
  { role: "user" as const, content: "And how would you test it?" },
];

/** The coder model's save files in `dir`, by name. */
async function coderSaves(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.name.startsWith("lqp-coder-")) names.push(entry.name);
  }
  return names.sort();
}

async function withKvLab(
  specs: (dir: string) => FakeModelSpec[],
  extraConfig: string,
  body: (
    ctx: HomelabContext & {
      client: OpenAI;
      log: CapturedLog;
      dir: string;
      configFile: string;
    },
  ) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "lqp-kv-" });
  const log = new CapturedLog();
  const configFile = `${dir}.yml`;
  try {
    await withHomelabProxy(specs(dir), extraConfig, async (ctx) => {
      const client = new OpenAI({
        baseURL: `${ctx.proxy.url}/v1`,
        apiKey: "unused",
        maxRetries: 0,
      });
      await body({ ...ctx, client, log, dir, configFile });
    }, { log, configFile });
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.remove(configFile).catch(() => {});
  }
}

const kvModel = (dir: string, extra = ""): FakeModelSpec => ({
  id: "coder",
  fromConfig: true,
  kvCache: `{ save: true, dir: ${dir}${extra} }`,
});

Deno.test("kv_cache: a long conversation on A, then B, then A's next turn finds ≥ 90% of its prompt cached; without kv_cache none", async () => {
  await withKvLab(
    (dir) => [kvModel(dir), { id: "plain", fromConfig: true }, { id: "other" }],
    "",
    async ({ proxy, client, log, dir }) => {
      const first = longConversation("fn");
      const one = await turn(client, "coder", first);
      assert.ok(one.usage.prompt_tokens > 3000, `prompt of ${one.usage.prompt_tokens} tokens`);
      assert.equal((await post(proxy.url, chatBody("other"))).status, 200); // swap: coder saved
      assert.ok((await coderSaves(dir)).length > 0, "no save file");
      const two = await turn(client, "coder", next(first, one.answer));
      const cached = two.usage.prompt_tokens_details?.cached_tokens ?? 0;
      assert.ok(
        cached >= 0.9 * two.usage.prompt_tokens,
        `cached ${cached} of ${two.usage.prompt_tokens}`,
      );

      // The same conversation on a model without kv_cache starts cold after a swap.
      const plain = await turn(client, "plain", first);
      assert.equal((await post(proxy.url, chatBody("other"))).status, 200);
      const cold = await turn(client, "plain", next(first, plain.answer));
      assert.equal(cold.usage.prompt_tokens_details?.cached_tokens, 0);

      // What users and operators see: the swap line, the request line, metrics, /v1/models.
      const warm = log.of("swap").find((e) =>
        e.fields.to === "coder" && e.fields.kv_restored_tokens
      );
      assert.ok(warm, "no swap line with restored tokens");
      assert.ok(Number(warm.fields.kv_restored_tokens) > 3000);
      const saved = log.of("swap").find((e) =>
        e.fields.from === "coder" && e.fields.kv_saved_tokens
      );
      assert.ok(saved, "no swap line with saved tokens");
      const lines = log.of("request").filter((e) => e.fields.model === "coder");
      assert.equal(lines.at(-1)!.fields.cached_tokens, cached);
      const timeline = (await getJson(`${proxy.url}/dashboard/state`)).body.swaps as {
        to: string | null;
        kv_restored_tokens: number | null;
      }[];
      assert.ok(timeline.some((w) => w.to === "coder" && (w.kv_restored_tokens ?? 0) > 3000));
      const prom = await (await fetch(`${proxy.url}/metrics?format=prometheus`)).text();
      assert.match(prom, /lqp_kv_saved_tokens_total\{model="coder"\} [1-9]\d*/);
      assert.match(prom, /lqp_kv_restored_tokens_total\{model="coder"\} [1-9]\d*/);
      assert.match(prom, /lqp_kv_restore_seconds_count\{model="coder"\} 1/);
      const models = (await getJson(`${proxy.url}/v1/models`)).body.data as {
        id: string;
        kv_cache: string;
      }[];
      assert.deepEqual(models.map((m) => [m.id, m.kv_cache]), [
        ["coder", "on"],
        ["plain", "off"],
        ["other", "off"],
      ]);
    },
  );
});

Deno.test("kv_cache: a corrupt save file, then a missing one: each return starts cold, logs a failed restore, leaves no bad file behind, and answers", async () => {
  await withKvLab((dir) => [kvModel(dir), { id: "other" }], "", async (ctx) => {
    const { proxy, client, log, dir } = ctx;
    const first = longConversation("corrupt");
    let answer = (await turn(client, "coder", first)).answer;
    for (const damage of ["corrupt", "missing"] as const) {
      assert.equal((await post(proxy.url, chatBody("other"))).status, 200);
      const files = await coderSaves(dir);
      assert.equal(files.length, 1, files.join(","));
      if (damage === "corrupt") await Deno.writeTextFile(`${dir}/${files[0]}`, "not a kv cache");
      else await Deno.remove(`${dir}/${files[0]}`);
      const failures = log.of("kv_restore_failed").length;
      const again = await turn(client, "coder", next(first, answer));
      assert.equal(again.usage.prompt_tokens_details?.cached_tokens, 0, damage);
      assert.equal(log.of("kv_restore_failed").length, failures + 1, damage);
      assert.deepEqual(
        await coderSaves(dir),
        [],
        `${damage}: the bad file is gone`,
      );
      answer = again.answer;
    }
  });
});

Deno.test("kv_cache: max_bytes keeps the model's save files within budget, oldest (another build's) deleted first", async () => {
  await withKvLab(
    (dir) => [kvModel(dir, ", max_bytes: 60kb"), { id: "other" }],
    "",
    async ({ proxy, client, dir, log }) => {
      // Left by an older build of the model, long ago.
      const stale = `${dir}/lqp-coder-oldbuild-slot0.bin`;
      await Deno.writeFile(stale, new Uint8Array(50 * 1024));
      await Deno.utime(stale, new Date(2020, 0, 1), new Date(2020, 0, 1));
      const other = `${dir}/unrelated.txt`; // not the proxy's: never touched
      await Deno.writeTextFile(other, "keep me");
      // Two conversations land in two slots.
      await Promise.all([
        turn(client, "coder", longConversation("x")),
        turn(client, "coder", longConversation("y")),
      ]);
      assert.equal((await post(proxy.url, chatBody("other"))).status, 200);
      const files = await coderSaves(dir);
      let total = 0;
      for (const f of files) total += (await Deno.stat(`${dir}/${f}`)).size;
      assert.ok(total <= 60 * 1024, `${total} bytes in ${files.join(", ")}`);
      assert.ok(!files.includes("lqp-coder-oldbuild-slot0.bin"), "the stale file went first");
      assert.ok(files.length >= 1, "the newest save stays");
      assert.equal(await Deno.readTextFile(other), "keep me");
      assert.ok(log.of("kv_file_evicted").length >= 1);
    },
  );
});

Deno.test("kv_cache on a server started without --slot-save-path: said once in the log and on /v1/models, swaps unaffected", async () => {
  const log = new CapturedLog();
  await withHomelabProxy(
    [
      { id: "handmade", kvCache: "{ save: true }" },
      { id: "other" },
    ],
    "",
    async ({ proxy }) => {
      for (let round = 0; round < 2; round++) {
        assert.equal((await post(proxy.url, chatBody("handmade"))).status, 200);
        assert.equal((await post(proxy.url, chatBody("other"))).status, 200);
      }
      assert.equal(log.of("kv_cache_unsupported").length, 1);
      const entry = (await getJson(`${proxy.url}/v1/models/handmade`)).body;
      assert.equal(entry.kv_cache, "unsupported");
      assert.equal(log.of("swap").filter((e) => e.fields.to === "handmade").length, 2);
    },
    { log },
  );
});

Deno.test("kv_cache in a hand-made container started with --slot-save-path: saved inside it, restored on return", async () => {
  await withHomelabProxy(
    [
      { id: "handmade", kvCache: "{ save: true }", args: ["--slot-save-path", "/tmp/"] },
      { id: "other" },
    ],
    "",
    async ({ proxy }) => {
      const client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: "unused", maxRetries: 0 });
      const first = longConversation("hand");
      const one = await turn(client, "handmade", first);
      assert.equal((await post(proxy.url, chatBody("other"))).status, 200);
      const two = await turn(client, "handmade", next(first, one.answer));
      const cached = two.usage.prompt_tokens_details?.cached_tokens ?? 0;
      assert.ok(cached >= 0.9 * two.usage.prompt_tokens, `cached ${cached}`);
    },
  );
});

Deno.test("kv_cache after the model's container block changed (another build): the old save is not restored, it is deleted, the return is cold", async () => {
  await withKvLab(
    (dir) => [kvModel(dir), { id: "other" }],
    `admin_key: ${ADMIN_KEY}`,
    async ({ proxy, client, log, dir, configFile }) => {
      const first = longConversation("build");
      const one = await turn(client, "coder", first);
      assert.equal((await post(proxy.url, chatBody("other"))).status, 200);
      assert.equal((await coderSaves(dir)).length, 1);
      // The operator changes the model's container (a new llama.cpp flag, a new image…).
      const text = await Deno.readTextFile(configFile);
      await Deno.writeTextFile(
        configFile,
        text.replace('"FAKE_TOKEN_MS":"2"', '"FAKE_TOKEN_MS":"3"'),
      );
      const reload = await fetch(`${proxy.url}/admin/reload`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_KEY}` },
      });
      assert.deepEqual((await reload.json()).changed, ["coder"]);
      const two = await turn(client, "coder", next(first, one.answer));
      assert.equal(two.usage.prompt_tokens_details?.cached_tokens, 0);
      assert.equal(log.of("kv_cache_stale").length, 1);
      assert.equal(log.of("kv_restore_failed").length, 0);
      assert.ok(log.of("container_removed").some((e) => e.fields.model === "coder"));
      assert.deepEqual(
        await coderSaves(dir),
        [],
        "the old build's file is deleted",
      );
    },
  );
});

Deno.test("kv_cache: a save or restore slower than its timeout is given up; the swap goes on and the request is answered cold", async () => {
  await withKvLab(
    (dir) => [
      { ...kvModel(dir, ", save_timeout: 0.3"), id: "slowsave", slotSaveMs: 3000 },
      { ...kvModel(dir, ", restore_timeout: 0.3"), id: "slowrestore", slotRestoreMs: 3000 },
      { id: "other" },
    ],
    "",
    async ({ proxy, client, log }) => {
      for (const model of ["slowsave", "slowrestore"]) {
        const first = longConversation(model);
        const one = await turn(client, model, first);
        assert.equal((await post(proxy.url, chatBody("other"))).status, 200);
        const two = await turn(client, model, next(first, one.answer));
        assert.equal(two.usage.prompt_tokens_details?.cached_tokens, 0, model);
      }
      // slowsave is stopped twice (for other, then for slowrestore): both saves give up.
      const saveFailed = log.of("kv_save_failed");
      assert.deepEqual(saveFailed.map((e) => e.fields.model), ["slowsave", "slowsave"]);
      assert.deepEqual(log.of("kv_restore_failed").map((e) => e.fields.model), ["slowrestore"]);
      // The stop waited for the save's timeout, not for the 3 s the save would have taken.
      const away = log.of("swap").find((e) => e.fields.from === "slowsave")!;
      assert.ok(Number(away.fields.stop_ms) < 3000, `stop took ${away.fields.stop_ms} ms`);
      const back = log.of("swap").filter((e) => e.fields.to === "slowrestore").at(-1)!;
      assert.equal(back.fields.kv_restored_tokens, undefined);
    },
  );
});
