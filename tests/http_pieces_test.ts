import assert from "node:assert/strict";
import { parseRoutingFields, readBody } from "../lib/body.ts";
import { checkRequestBody } from "../lib/request_checks.ts";
import { newRequestId, REQUEST_ID } from "../lib/request_id.ts";
import { demuxLogs } from "../lib/docker.ts";
import { CompleteAnswer, hasNoBody, setHeader } from "../lib/answer.ts";
import { ApiError } from "../lib/errors.ts";
import { isReadyAnswer, pollIntervalMs } from "../lib/health.ts";
import { MemoryRelease } from "../lib/memory_release.ts";
import { countEventEnds, sseComment, sseError } from "../lib/sse.ts";
import { targetUrl } from "../lib/upstream.ts";

const bytes = (text: string) => new TextEncoder().encode(text);
const parse = (body: string | Uint8Array, path = "/v1/rerank") => {
  const fields = parseRoutingFields(typeof body === "string" ? bytes(body) : body, 8);
  checkRequestBody(path, fields.skeleton, { maxMessages: 3 });
  return { model: fields.model, stream: fields.stream };
};

function apiErrorOf(fn: () => unknown): ApiError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ApiError);
    return err;
  }
  assert.fail("no error thrown");
}

Deno.test("parseRoutingFields() reads model and stream, ignoring everything else", () => {
  assert.deepEqual(parse('{"model":"m","stream":true,"x":[1]}'), {
    model: "m",
    stream: true,
  });
  assert.equal(parse('{"model":"m"}').stream, false);
});

Deno.test("parseRoutingFields() answers 400 with a reason for each kind of bad body", () => {
  const cases: [string | Uint8Array, string][] = [
    ["", "invalid_body"],
    ['{"model":"m",', "invalid_json"],
    ["[1,2]", "invalid_body"],
    ["null", "invalid_body"],
    ['{"messages":[]}', "missing_model"],
    ['{"model":42}', "missing_model"],
    ['{"model":"  "}', "missing_model"],
    [new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), "invalid_body"],
  ];
  for (const [body, code] of cases) {
    const err = apiErrorOf(() => parse(body));
    assert.equal(err.status, 400, `${body}`);
    assert.equal(err.code, code, `${body}`);
  }
});

Deno.test("parseRoutingFields() checks what the OpenAI routes require, naming the parameter", () => {
  const cases: [string, string, string, string | null][] = [
    ["/v1/chat/completions", '{"model":"m"}', "missing_required_parameter", "messages"],
    ["/v1/chat/completions", '{"model":"m","messages":"hi"}', "invalid_type", "messages"],
    ["/v1/chat/completions", '{"model":"m","messages":[]}', "invalid_value", "messages"],
    [
      "/v1/chat/completions",
      '{"model":"m","messages":[{"content":"x"}]}',
      "invalid_type",
      "messages.0.role",
    ],
    [
      "/v1/chat/completions",
      '{"model":"m","messages":[{"role":"user"},{"role":"user"},{"role":"user"},{"role":"user"}]}',
      "too_many_messages",
      "messages",
    ],
    ["/v1/completions", '{"model":"m","prompt":5}', "invalid_value", "prompt"],
    ["/v1/embeddings", '{"model":"m"}', "missing_required_parameter", "input"],
    ["/v1/rerank", '{"model":"m","stream":"yes"}', "invalid_type", "stream"],
    ["/v1/rerank", '{"model":"m","max_tokens":"four"}', "invalid_type", "max_tokens"],
    ["/v1/rerank", '{"model":"m","max_tokens":-1}', "invalid_value", "max_tokens"],
    ["/v1/rerank", '{"model":"m","n":0}', "invalid_value", "n"],
    ["/v1/rerank", '{"model":"m","x":[[[[[[[[[1]]]]]]]]]}', "invalid_body", null],
  ];
  for (const [path, body, code, param] of cases) {
    const err = apiErrorOf(() => parse(body, path));
    assert.equal(err.status, 400, body);
    assert.deepEqual([err.code, err.param], [code, param], body);
  }
  const ok = parse(
    '{"model":"m","messages":[{"role":"user","content":"[[[[[[[[[[["}]}',
    "/v1/chat/completions",
  );
  assert.equal(ok.model, "m"); // brackets inside strings are not nesting
});

Deno.test("newRequestId(): ids sort in arrival order and stay distinct within one millisecond", () => {
  const now = Date.UTC(2026, 11, 2);
  const sameMs = Array.from({ length: 10_000 }, () => newRequestId(now));
  assert.equal(new Set(sameMs).size, sameMs.length);
  for (const id of sameMs) assert.match(id, REQUEST_ID);
  const later = [newRequestId(now + 1), newRequestId(now + 1000), newRequestId(now + 86_400_000)];
  const max = sameMs.reduce((a, b) => (a > b ? a : b));
  assert.ok(max < later[0] && later[0] < later[1] && later[1] < later[2]);
  // A peer's id from before the time prefix is still one of ours.
  assert.match("req_fc71ed15f4414ecd", REQUEST_ID);
});

Deno.test("a complete answer: setHeader() replaces the backend's header of that name, 204/205/304 have no body", () => {
  const answer = new CompleteAnswer(
    200,
    "OK",
    [["x-request-id", "theirs"], ["x-a", "1"]],
    new Uint8Array(2),
  );
  setHeader(answer, "x-request-id", "req_1");
  assert.deepEqual(answer.headers, [["x-a", "1"], ["x-request-id", "req_1"]]);
  assert.ok(answer.ok);
  for (const status of [204, 205, 304]) {
    assert.ok(hasNoBody(new CompleteAnswer(status, "", [], new Uint8Array(0))));
  }
  assert.ok(!hasNoBody(new CompleteAnswer(200, "", [], new Uint8Array(0))));
});

Deno.test("readBody() stops a chunked body that passes the limit with 413", async () => {
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      for (let i = 0; i < 10; i++) controller.enqueue(new Uint8Array(100));
      controller.close();
    },
  });
  const req = new Request("http://x/", { method: "POST", body: stream });
  await assert.rejects(readBody(req, 550), (err) => err instanceof ApiError && err.status === 413);
  const ok = new Request("http://x/", { method: "POST", body: "hello" });
  assert.equal(new TextDecoder().decode(await readBody(ok, 5)), "hello");
});

Deno.test("targetUrl() maps the client's /v1 onto a backend_url that ends in /v1", () => {
  assert.equal(
    targetUrl("http://localhost:8080/v1", "/v1/chat/completions"),
    "http://localhost:8080/v1/chat/completions",
  );
  assert.equal(
    targetUrl("http://localhost:8080/v1/", "/v1/rerank?x=1"),
    "http://localhost:8080/v1/rerank?x=1",
  );
  assert.equal(
    targetUrl("http://localhost:8080", "/v1/messages"),
    "http://localhost:8080/v1/messages",
  );
  assert.equal(
    targetUrl("http://h:1/openai/v1", "/v1/embeddings"),
    "http://h:1/openai/v1/embeddings",
  );
});

Deno.test("isReadyAnswer() follows llama-server: 200 with status ok; 503 loading is not ready", () => {
  assert.equal(isReadyAnswer(200, '{"status":"ok"}'), true);
  assert.equal(isReadyAnswer(200, '{"status":"loading model"}'), false);
  assert.equal(isReadyAnswer(503, '{"error":{"message":"Loading model"}}'), false);
  assert.equal(isReadyAnswer(200, "OK"), true);
});

Deno.test("pollIntervalMs(): 5 ms at first, then a fiftieth of the time polled, at most 200 ms", () => {
  assert.equal(pollIntervalMs(0), 5);
  assert.equal(pollIntervalMs(700), 14);
  assert.equal(pollIntervalMs(2000), 40);
  assert.equal(pollIntervalMs(120_000), 200);
  // The wait the gap adds stays near 2% of the time loaded so far, whatever the model.
  for (const elapsed of [1000, 3000, 9000]) assert.ok(pollIntervalMs(elapsed) <= elapsed * 0.02);
});

Deno.test("demuxLogs() joins stdout and stderr frames, even when cut short", () => {
  const frame = (stream: number, text: string) => {
    const payload = bytes(text);
    const out = new Uint8Array(8 + payload.length);
    out[0] = stream;
    new DataView(out.buffer).setUint32(4, payload.length);
    out.set(payload, 8);
    return out;
  };
  const all = new Uint8Array([...frame(1, "hello-out\n"), ...frame(2, "oops\n")]);
  assert.equal(demuxLogs(all), "hello-out\noops\n");
  assert.equal(demuxLogs(all.subarray(0, all.length - 2)), "hello-out\noop");
});

Deno.test("sseComment() and sseError() frame what clients ignore and what they raise", () => {
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  assert.equal(decode(sseComment("loading model a\n12s")), ": loading model a 12s\n\n");
  const err = new ApiError(504, "request_timeout", "late");
  assert.equal(
    decode(sseError(err)),
    'data: {"error":{"message":"late","type":"timeout_error","param":null,"code":"request_timeout"}}\n\n',
  );
});

Deno.test("countEventEnds() counts the events a chunk completes, for the request log", () => {
  assert.equal(countEventEnds(bytes('data: {"a":1}\n\ndata: {"b":2}\n\n')), 2);
  assert.equal(countEventEnds(bytes(": queued\n\ndata: {")), 1);
  assert.equal(countEventEnds(bytes('data: {"a":1}\n')), 0);
});

Deno.test("MemoryRelease: a burst of 2,000 waiting requests is followed by one shrinking collection once arrivals stop for a second", async () => {
  const calls: unknown[] = [];
  const memory = new MemoryRelease((options) => calls.push(options));
  const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
  try {
    memory.admitted(1999);
    await pause(1100);
    assert.deepEqual(calls, [], "a short queue asks for nothing");
    memory.admitted(2000);
    await pause(600);
    memory.admitted(2001); // still arriving: the quiet second starts again
    await pause(600);
    assert.deepEqual(calls, []);
    await pause(1000);
    assert.deepEqual(calls, [{ type: "major", execution: "sync", flavor: "last-resort" }]);
    memory.admitted(2002);
    await pause(1100);
    assert.equal(calls.length, 1, "once per burst, not once per arrival into a long queue");
    memory.admitted(10); // the queue was short again: the next burst may release
    memory.admitted(2000);
    memory.stop();
    await pause(1100);
    assert.equal(calls.length, 1, "stop() forgets the pending collection");
  } finally {
    memory.stop();
  }
});
