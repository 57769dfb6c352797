/**
 * A corpus of malformed requests, each answered with the right 4xx in the OpenAI error shape
 * before anything is queued, then a seeded fuzz run; afterwards the proxy still serves a
 * normal request and its memory has not run away.
 */
import assert from "node:assert/strict";
import { seededRandom } from "../sim/make_traces.ts";
import { chatBody, post } from "./support/client.ts";
import { withHomelabProxy } from "./support/proxy.ts";

type Case = [name: string, init: RequestInit & { path?: string }, status: number, code: string];

const json = (body: string, headers: Record<string, string> = {}) => ({
  method: "POST",
  headers: { "content-type": "application/json", ...headers },
  body,
});
const msgs = '"messages":[{"role":"user","content":"hi"}]';

const CORPUS: Case[] = [
  ["empty body", json(""), 400, "invalid_body"],
  ["whitespace only", json("   \n"), 400, "invalid_json"],
  ["truncated object", json('{"model":"a",'), 400, "invalid_json"],
  ["truncated array", json(`{"model":"a",${msgs.slice(0, -3)}`), 400, "invalid_json"],
  ["single quotes", json("{'model':'a'}"), 400, "invalid_json"],
  ["trailing comma", json(`{"model":"a",${msgs},}`), 400, "invalid_json"],
  ["comments", json(`{"model":"a", /* hi */ ${msgs}}`), 400, "invalid_json"],
  ["NaN literal", json(`{"model":"a",${msgs},"temperature":NaN}`), 400, "invalid_json"],
  ["two objects", json(`{"model":"a"}{"model":"a"}`), 400, "invalid_json"],
  ["plain text", json("hello"), 400, "invalid_json"],
  ["form encoded", json("model=a&prompt=hi"), 400, "invalid_json"],
  ["JSON null", json("null"), 400, "invalid_body"],
  ["JSON array", json(`[{"model":"a"}]`), 400, "invalid_body"],
  ["JSON string", json('"model"'), 400, "invalid_body"],
  ["JSON number", json("42"), 400, "invalid_body"],
  [
    "invalid UTF-8",
    { method: "POST", body: new Uint8Array([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x7d]) },
    400,
    "invalid_body",
  ],
  [
    "lone surrogate bytes",
    { method: "POST", body: new Uint8Array([0x7b, 0xed, 0xa0, 0x80, 0x7d]) },
    400,
    "invalid_body",
  ],
  ["no model", json(`{${msgs}}`), 400, "missing_model"],
  ["model is a number", json(`{"model":7,${msgs}}`), 400, "missing_model"],
  ["model is empty", json(`{"model":"",${msgs}}`), 400, "missing_model"],
  ["model is blank", json(`{"model":"   ",${msgs}}`), 400, "missing_model"],
  ["model is an array", json(`{"model":["a"],${msgs}}`), 400, "missing_model"],
  ["model is null", json(`{"model":null,${msgs}}`), 400, "missing_model"],
  ["unknown model", json(`{"model":"gpt-9",${msgs}}`), 404, "model_not_found"],
  [
    "model with path characters",
    json(`{"model":"../../etc/passwd",${msgs}}`),
    404,
    "model_not_found",
  ],
  ["messages missing", json(`{"model":"a"}`), 400, "missing_required_parameter"],
  ["messages is a string", json(`{"model":"a","messages":"hi"}`), 400, "invalid_type"],
  ["messages empty", json(`{"model":"a","messages":[]}`), 400, "invalid_value"],
  [
    "message without role",
    json(`{"model":"a","messages":[{"content":"hi"}]}`),
    400,
    "invalid_type",
  ],
  ["stream is a string", json(`{"model":"a",${msgs},"stream":"yes"}`), 400, "invalid_type"],
  [
    "max_tokens is a string",
    json(`{"model":"a",${msgs},"max_tokens":"four"}`),
    400,
    "invalid_type",
  ],
  ["max_tokens negative", json(`{"model":"a",${msgs},"max_tokens":-5}`), 400, "invalid_value"],
  ["max_tokens fractional", json(`{"model":"a",${msgs},"max_tokens":1.5}`), 400, "invalid_type"],
  [
    "temperature is a string",
    json(`{"model":"a",${msgs},"temperature":"hot"}`),
    400,
    "invalid_type",
  ],
  ["n is zero", json(`{"model":"a",${msgs},"n":0}`), 400, "invalid_value"],
  [
    "prompt missing",
    { ...json(`{"model":"a"}`), path: "/v1/completions" },
    400,
    "missing_required_parameter",
  ],
  [
    "prompt is an object",
    { ...json(`{"model":"a","prompt":{}}`), path: "/v1/completions" },
    400,
    "invalid_value",
  ],
  [
    "embeddings input missing",
    { ...json(`{"model":"a"}`), path: "/v1/embeddings" },
    400,
    "missing_required_parameter",
  ],
  [
    "too many messages",
    json(`{"model":"a","messages":[${Array(2001).fill('{"role":"user"}').join(",")}]}`),
    400,
    "too_many_messages",
  ],
  [
    "deep nesting",
    json(`{"model":"a",${msgs},"x":${"[".repeat(100)}${"]".repeat(100)}}`),
    400,
    "invalid_body",
  ],
  [
    "huge body",
    json(`{"model":"a",${msgs},"pad":"${"x".repeat(70_000)}"}`),
    413,
    "request_too_large",
  ],
  [
    "multipart upload",
    {
      method: "POST",
      headers: { "content-type": "multipart/form-data; boundary=x" },
      body: "--x--",
    },
    415,
    "unsupported_media_type",
  ],
  [
    "bad X-Priority",
    json(`{"model":"a",${msgs}}`, { "x-priority": "urgent!!" }),
    400,
    "invalid_priority",
  ],
  ["GET on a POST route", { method: "GET" }, 404, "not_found"],
  ["PUT on a POST route", { method: "PUT", body: `{"model":"a",${msgs}}` }, 404, "not_found"],
  [
    "unknown version prefix",
    { ...json(`{"model":"a",${msgs}}`), path: "/v2/chat/completions" },
    404,
    "not_found",
  ],
  ["unknown top-level path", { ...json(`{"model":"a"}`), path: "/admin/../v1x" }, 404, "not_found"],
];

/** Raw HTTP/1.1 over TCP, for what fetch would normalise (dot segments, header floods). */
async function raw(port: number, head: string): Promise<{ status: number; body: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(head));
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
      const text = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
      const [headers, body = ""] = text.split("\r\n\r\n");
      const length = Number(/content-length: (\d+)/i.exec(headers)?.[1] ?? -1);
      if (length >= 0 && new TextEncoder().encode(body).length >= length) break;
    }
    const text = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
    return { status: Number(text.split(" ")[1]), body: text.split("\r\n\r\n")[1] ?? "" };
  } finally {
    conn.close();
  }
}

async function expectError(res: Response, status: number, code: string, name: string) {
  const text = await res.text();
  assert.equal(res.status, status, `${name}: ${text}`);
  const body = JSON.parse(text);
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"], name);
  assert.equal(body.error.code, code, name);
}

Deno.test("a corpus of malformed requests: each gets its 4xx in the OpenAI shape, nothing queued", async () => {
  await withHomelabProxy([{ id: "a" }], "max_body_size: 64kb", async ({ lab, proxy }) => {
    assert.ok(CORPUS.length >= 40);
    for (const [name, { path = "/v1/chat/completions", ...init }, status, code] of CORPUS) {
      await expectError(await fetch(`${proxy.url}${path}`, init), status, code, name);
    }
    const port = Number(new URL(proxy.url).port);
    const tricks = [
      "POST /v1/chat/completions/../../health HTTP/1.1",
      "POST /v1/%2e%2e/%2e%2e/etc/passwd HTTP/1.1",
      "POST //v1//chat//completions HTTP/1.1",
      `POST /v1/${"a".repeat(20_000)} HTTP/1.1`,
    ];
    for (const line of tricks) {
      const res = await raw(
        port,
        `${line}\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`,
      );
      assert.ok(res.status >= 400 && res.status < 500, `${line.slice(0, 60)} → ${res.status}`);
    }
    const flood = Array.from({ length: 300 }, (_, i) => `X-Flood-${i}: ${"v".repeat(200)}`).join(
      "\r\n",
    );
    const flooded = await raw(
      port,
      `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n${flood}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`,
    );
    assert.ok(flooded.status >= 400 && flooded.status < 500, `header flood → ${flooded.status}`);

    const metrics = await (await fetch(`${proxy.url}/metrics`)).json();
    assert.equal(metrics.total_requests, 0); // nothing was queued
    assert.deepEqual(await lab.running(), []); // nor a model started for any of it
    const ok = await post(proxy.url, chatBody("a"));
    assert.equal(ok.status, 200);
  });
});

/** Random bodies: noise, random JSON, and mutations of a valid request. */
function fuzzBodies(seed: number, count: number): Uint8Array<ArrayBuffer>[] {
  const rand = seededRandom(seed);
  const valid = new TextEncoder().encode(JSON.stringify(chatBody("a", { max_tokens: 2 })));
  const randomJson = (depth: number): unknown => {
    const pick = Math.floor(rand() * 7);
    if (depth > 3 || pick === 0) return rand() < 0.5 ? null : Math.floor(rand() * 1e6) - 5e5;
    if (pick === 1) {
      return String.fromCharCode(...Array.from({ length: 8 }, () => 32 + rand() * 94));
    }
    if (pick === 2) return rand() < 0.5;
    if (pick === 3) {
      return Array.from({ length: Math.floor(rand() * 4) }, () => randomJson(depth + 1));
    }
    const keys = ["model", "messages", "stream", "max_tokens", "prompt", "n", "x"];
    return Object.fromEntries(
      keys.filter(() => rand() < 0.5).map((k) => [k, randomJson(depth + 1)]),
    );
  };
  return Array.from({ length: count }, () => {
    const kind = Math.floor(rand() * 3);
    if (kind === 0) return crypto.getRandomValues(new Uint8Array(Math.floor(rand() * 300)));
    if (kind === 1) return new TextEncoder().encode(JSON.stringify(randomJson(0)));
    const bytes = valid.slice(0, Math.floor(rand() * valid.length + 1));
    for (let i = Math.floor(rand() * 4); i > 0; i--) {
      bytes[Math.floor(rand() * bytes.length)] = rand() * 256;
    }
    return bytes;
  });
}

Deno.test("seeded fuzz: random bodies get a 200 or a 4xx in the OpenAI shape, never a 5xx", async () => {
  await withHomelabProxy([{ id: "a" }], "", async ({ proxy }) => {
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200); // load the model
    const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});
    gc();
    const rssBefore = Deno.memoryUsage().rss;
    let served = 0;
    for (const body of fuzzBodies(42, 400)) {
      const res = await fetch(`${proxy.url}/v1/chat/completions`, { method: "POST", body });
      const text = await res.text();
      if (res.status === 200) {
        served++;
        continue;
      }
      assert.ok([400, 404, 413].includes(res.status), `status ${res.status} for ${text}`);
      assert.equal(typeof JSON.parse(text).error.code, "string");
    }
    gc();
    const grownMb = (Deno.memoryUsage().rss - rssBefore) / 2 ** 20;
    assert.ok(grownMb < 64, `RSS grew by ${grownMb.toFixed(1)} MB over 400 fuzzed requests`);
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
    const metrics = await (await fetch(`${proxy.url}/metrics`)).json();
    assert.equal(metrics.total_requests, served + 2);
  });
});
