/**
 * The proxy's own HTTP/1.1 server: the framing functions on their own, then the server with
 * the ways real clients send requests that fetch never does (curl's chunked uploads and
 * `Expect: 100-continue`, pipelining, HTTP/1.0) and smuggling attempts it must refuse.
 */
import assert from "node:assert/strict";
import {
  ChunkedDecoder,
  hasControl,
  headEnd,
  isFieldName,
  MalformedRequest,
  parseHead,
  withHead,
} from "../lib/http1.ts";
import { chunkFrame, copyForFraming } from "../lib/chunk_frame.ts";
import { chatBody, post } from "./support/client.ts";
import { CLIENT_TOOLS, requireClientTools } from "./support/client_tools.ts";
import { withHomelabProxy } from "./support/proxy.ts";
import { within } from "./support/wait_for.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

function refusal(fn: () => unknown): number {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof MalformedRequest, String(err));
    return err.status;
  }
  assert.fail("accepted");
}

Deno.test("isFieldName() and hasControl() judge every char as RFC 9110's grammar does", () => {
  // The grammar's own words, as regexes: a token; a control other than tab.
  const token = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
  // deno-lint-ignore no-control-regex -- naming the controls is the point
  const control = /[\x00-\x08\x0a-\x1f\x7f]/;
  for (let code = 0; code < 0x180; code++) {
    const ch = String.fromCharCode(code);
    for (const text of [ch, `a${ch}`, `${ch}b`]) {
      assert.equal(isFieldName(text), token.test(text), `name ${JSON.stringify(text)}`);
      assert.equal(hasControl(text), control.test(text), `value ${JSON.stringify(text)}`);
    }
  }
  assert.equal(isFieldName(""), false);
  assert.equal(hasControl(""), false);
});

Deno.test("withHead() writes a head's chars as bytes, one per char even past ASCII, then the body", () => {
  const body = bytes("{}");
  assert.deepEqual(withHead("a: b\r\n\r\n", body), bytes("a: b\r\n\r\n{}"));
  // A header value byte 0xe9 (é in Latin-1) stays one byte 0xe9, not UTF-8's two.
  const out = withHead("x: caf\u00e9\r\n\r\n", body);
  assert.equal(out.length, 11 + 2);
  assert.equal(out[6], 0xe9);
  assert.deepEqual(out.subarray(7), bytes("\r\n\r\n{}"));
});

Deno.test("chunkFrame() frames any bytes as one chunk; copyForFraming()'s copy is framed in place", () => {
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  const data = "x".repeat(300); // 0x12c: a three-digit size
  assert.equal(text(chunkFrame(bytes(data))), `12c\r\n${data}\r\n`);
  assert.equal(text(chunkFrame(bytes(""))), "0\r\n\r\n");

  // The copy reads as the parts' bytes; its frame is the same, around the copy's own buffer,
  // whatever the size line's length.
  const copy = copyForFraming([bytes("data: a"), bytes("\n\n")]);
  assert.equal(text(copy), "data: a\n\n");
  const framed = chunkFrame(copy);
  assert.equal(text(framed), "9\r\ndata: a\n\n\r\n");
  assert.equal(framed.buffer, copy.buffer);
  for (const length of [0x10, 0x100, 0x1000, 0x10000]) {
    const long = copyForFraming([bytes("y".repeat(length))]);
    const frame = chunkFrame(long);
    assert.equal(text(frame), `${length.toString(16)}\r\n${"y".repeat(length)}\r\n`);
    assert.equal(frame.buffer, long.buffer);
    assert.equal(text(long), "y".repeat(length));
  }

  // A part of the copy, or bytes laid out alike in a buffer not made by copyForFraming, are
  // copied into a frame of their own: bytes outside them are never written.
  const part = copy.subarray(0, 4);
  assert.equal(text(chunkFrame(part)), "4\r\ndata\r\n");
  assert.equal(text(chunkFrame(copy.subarray(1))), "8\r\nata: a\n\n\r\n");
  assert.equal(text(chunkFrame(copy.slice())), "9\r\ndata: a\n\n\r\n");
  assert.equal(text(copy), "data: a\n\n");
  const other = new Uint8Array(12 + 3).fill(0x2e);
  const alike = other.subarray(10, 13);
  assert.equal(text(chunkFrame(alike)), "3\r\n...\r\n");
  assert.ok(other.every((b) => b === 0x2e), "the other buffer's bytes were written");
});

Deno.test("headEnd() finds the blank line that ends a head, also across reads", () => {
  const text = bytes("GET / HTTP/1.1\r\nHost: x\r\n\r\nrest");
  assert.equal(headEnd(text, 0, text.length), text.length - 4);
  assert.equal(headEnd(text, 0, text.length - 6), -1); // the blank line not yet arrived
  assert.equal(headEnd(bytes("GET / HTTP/1.1\nHost: x\n\n"), 0, 24), -1); // bare LFs end nothing
});

Deno.test("parseHead() reads method, target, headers in order, body framing and keep-alive", () => {
  const head = parseHead(
    "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-A:  one \r\nx-a: two\r\n" +
      "Content-Length: 42\r\nExpect: 100-continue",
  );
  assert.equal(head.method, "POST");
  assert.equal(head.target, "/v1/chat/completions");
  assert.deepEqual(head.headers.slice(1, 3), [["X-A", "one"], ["x-a", "two"]]);
  assert.equal(head.body, 42);
  assert.equal(head.expectContinue, true);
  assert.equal(head.keepAlive, true);
  assert.equal(parseHead("GET / HTTP/1.1\r\nConnection: close").keepAlive, false);
  assert.equal(parseHead("GET / HTTP/1.0").keepAlive, false);
  assert.equal(parseHead("GET / HTTP/1.0\r\nConnection: Keep-Alive").keepAlive, true);
  assert.equal(parseHead("POST / HTTP/1.1\r\nTransfer-Encoding: chunked").body, "chunked");
  assert.equal(parseHead("POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5").body, 5);
});

Deno.test("parseHead() refuses what request smuggling is made of, with 400 or 501", () => {
  const cases: [string, number][] = [
    ["POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked", 400],
    ["POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6", 400],
    ["POST / HTTP/1.1\r\nContent-Length: -1", 400],
    ["POST / HTTP/1.1\r\nContent-Length: 1e3", 400],
    ["POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked", 501],
    ["POST / HTTP/1.1\r\nTransfer-Encoding: identity", 501],
    ["POST / HTTP/1.1\r\nContent-Length : 5", 400], // space before the colon
    ["POST / HTTP/1.1\r\nX-A: 1\r\n folded", 400], // obsolete line folding
    ["POST / HTTP/1.1\r\nX-A: 1\n2", 400], // a bare LF inside a field
    ["POST / HTTP/1.1\r\nX-A: a\x00b", 400],
    ["POST / HTTP/2.0", 400],
    ["POST /a b HTTP/1.1", 400],
    ["GET", 400],
  ];
  for (const [text, status] of cases) assert.equal(refusal(() => parseHead(text)), status, text);
});

Deno.test("ChunkedDecoder takes a body in any cut, with extensions and trailers, and stops at its end", () => {
  const wire = bytes("5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\nNEXT");
  for (let cut = 1; cut < wire.length; cut++) {
    const decoder = new ChunkedDecoder();
    let text = "";
    let at = 0;
    // Bytes arrive in two reads split at `cut`; what a feed leaves unused is offered again.
    for (const end of [cut, wire.length]) {
      const { used, data } = decoder.feed(wire, at, end);
      at += used;
      for (const piece of data) text += new TextDecoder().decode(piece);
    }
    assert.equal(text, "hello, world", `cut at ${cut}`);
    assert.ok(decoder.done);
    assert.equal(new TextDecoder().decode(wire.subarray(at)), "NEXT", `cut at ${cut}`);
  }
  const bad = ["zz\r\n", "5\r\nhello!!\r\n", "5\nhello\r\n"];
  for (const text of bad) {
    const wire = bytes(text);
    assert.equal(refusal(() => new ChunkedDecoder().feed(wire, 0, wire.length)), 400, text);
  }
});

/** Raw bytes to the proxy; everything it sends until it closes the connection. */
async function exchange(port: number, ...writes: string[]): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  for (const text of writes) await conn.write(bytes(text));
  let out = "";
  const buf = new Uint8Array(65536);
  try {
    for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
      out += new TextDecoder().decode(buf.subarray(0, n));
    }
  } catch {
    // reset after the answer: what arrived is the answer
  } finally {
    conn.close();
  }
  return out;
}

async function curl(args: string[]): Promise<{ status: number; body: string; trace: string }> {
  const out = await new Deno.Command("curl", {
    args: ["-sS", "-v", "-o", "-", "-w", "\n%{http_code}", ...args],
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const cut = text.lastIndexOf("\n");
  return {
    status: Number(text.slice(cut + 1)),
    body: text.slice(0, cut),
    trace: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("curl's chunked upload and Expect: 100-continue reach the backend byte-identical", async () => {
  await withHomelabProxy([{ id: "a" }], "", async ({ lab, proxy }) => {
    const body = JSON.stringify(chatBody("a", { note: "x".repeat(300_000) }));
    const file = await Deno.makeTempFile();
    try {
      await Deno.writeTextFile(file, body);
      const url = `${proxy.url}/v1/chat/completions`;
      const json = ["-H", "content-type: application/json"];
      const chunked = await curl([
        ...json,
        "-H",
        "transfer-encoding: chunked",
        "--data-binary",
        `@${file}`,
        url,
      ]);
      assert.equal(chunked.status, 200, chunked.body);
      assert.match(chunked.trace, /transfer-encoding: chunked/i);
      const continued = await curl([
        ...json,
        "-H",
        "expect: 100-continue",
        "--data-binary",
        `@${file}`,
        url,
      ]);
      assert.equal(continued.status, 200, continued.body);
      assert.match(continued.trace, /HTTP\/1\.1 100 Continue/);
    } finally {
      await Deno.remove(file);
    }
    const received = (await lab.state()).received.filter((r) => r.path === "/v1/chat/completions");
    assert.equal(received.length, 2);
    for (const r of received) assert.equal(r.body, body);
  });
});

/** What one client got for an upload: the answer's status and error code, or its own error. */
interface UploadResult {
  status: number | null;
  code: string | null;
  error: string | null;
}

/** A command printing an UploadResult as JSON (tests/clients/upload_client.*). */
async function uploadBy(cmd: string, args: string[]): Promise<UploadResult> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success || text === "") {
    throw new Error(`${cmd} ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return JSON.parse(text);
}

/** A raw socket that writes the whole request before it reads a byte, as simple clients do. */
async function uploadRaw(port: number, body: Uint8Array): Promise<UploadResult> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(bytes(
      `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${body.length}\r\n\r\n`,
    ));
    for (let at = 0; at < body.length;) at += await conn.write(body.subarray(at));
    const answer = await new Response(conn.readable).text();
    const status = Number(/^HTTP\/1\.1 (\d+) /.exec(answer)?.[1] ?? NaN);
    const code = JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4)).error.code;
    return { status, code, error: null };
  } catch (err) {
    return { status: null, code: null, error: String(err) };
  }
}

Deno.test("an upload refused before its body was read (over max_body_size) reaches every client as its 413, also those that send the whole body first: Python openai, httpx and urllib, Node fetch, curl, a raw socket", async () => {
  await requireClientTools();
  await withHomelabProxy([{ id: "a" }], "max_body_size: 1mb", async ({ lab, proxy }) => {
    const size = 16 * 1024 * 1024;
    const body = bytes(JSON.stringify(chatBody("a", { note: "x".repeat(size) })));
    const file = await Deno.makeTempFile();
    const results: Record<string, UploadResult> = {};
    try {
      await Deno.writeFile(file, body);
      const python = (client: string) =>
        uploadBy(CLIENT_TOOLS.python, [
          CLIENT_TOOLS.pythonUpload,
          client,
          proxy.url,
          "a",
          String(size),
        ]);
      for (const client of ["openai", "httpx", "urllib"]) results[client] = await python(client);
      results["node-fetch"] = await uploadBy("node", [
        CLIENT_TOOLS.nodeUpload,
        proxy.url,
        "a",
        String(size),
      ]);
      const curled = await curl([
        "--max-time",
        "60",
        "-H",
        "content-type: application/json",
        "--data-binary",
        `@${file}`,
        `${proxy.url}/v1/chat/completions`,
      ]);
      results.curl = {
        status: curled.status,
        code: curled.status === 0 ? null : JSON.parse(curled.body).error.code,
        error: curled.status === 0 ? curled.trace.slice(-300) : null,
      };
      results.raw = await within(
        "the raw socket's upload and answer",
        uploadRaw(Number(new URL(proxy.url).port), body),
        60_000,
      );
    } finally {
      await Deno.remove(file);
    }
    const expected = { status: 413, code: "request_too_large", error: null };
    // All clients at once: a failure shows which of them got no answer, and why.
    const everyClient = Object.fromEntries(
      Object.keys(results).map((client) => [client, expected]),
    );
    assert.deepEqual(results, everyClient);
    // Refused before queueing: no request asked for the model, so it was never started.
    assert.deepEqual(await lab.running(), []);
  });
});

Deno.test("pipelined requests on one connection each get an answer, the later health check last; HTTP/1.0 gets an answer and a close", async () => {
  await withHomelabProxy([{ id: "a" }], "", async ({ proxy }) => {
    const port = Number(new URL(proxy.url).port);
    const body = JSON.stringify(chatBody("a"));
    const request = (close: boolean) =>
      `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${body.length}\r\n${close ? "Connection: close\r\n" : ""}\r\n${body}`;
    // Three requests in one write, then the health check in a later one.
    const text = await exchange(
      port,
      request(false) + request(false) + request(false),
      "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    const statuses = [...text.matchAll(/HTTP\/1\.1 (\d+) /g)].map((m) => m[1]);
    assert.deepEqual(statuses, ["200", "200", "200", "200"]);
    assert.equal(text.match(/"object":"chat\.completion"/g)?.length, 3);
    assert.match(text.slice(text.lastIndexOf("HTTP/1.1")), /"status"/);

    const old = await exchange(port, "GET /health HTTP/1.0\r\n\r\n");
    assert.match(old, /^HTTP\/1\.1 200 [\s\S]*connection: close[\s\S]*"status"/i);
    // Still serving after all of it.
    assert.equal((await post(proxy.url, chatBody("a"))).status, 200);
  });
});

Deno.test("a model request's target is read as a URL would read it: dot segments and escapes reach the model, paths that resolve elsewhere get those routes' answers", async () => {
  await withHomelabProxy([{ id: "a" }], "", async ({ lab, proxy }) => {
    const port = Number(new URL(proxy.url).port);
    const body = JSON.stringify(chatBody("a"));
    const request = (target: string, method = "POST") =>
      `${method} ${target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`;
    const served: [string, string][] = [
      ["POST", "/v1/chat/completions?trace=1"],
      ["POST", "/v1/./chat/x/../completions?q=%41"],
      ["POST", "/./v1/chat/completions"],
      ["post", "/v1/chat/completions"],
    ];
    for (const [method, target] of served) {
      const text = await exchange(port, request(target, method));
      assert.match(text, /^HTTP\/1\.1 200 [\s\S]*"object":"chat\.completion"/, target);
    }
    const files = await exchange(port, request("/v1/chat/../fil%65s"));
    assert.match(files, /^HTTP\/1\.1 415 [\s\S]*"code":"unsupported_media_type"/);
    const health = await exchange(port, request("/v1/../health"));
    assert.match(health, /^HTTP\/1\.1 404 [\s\S]*No route for POST \/health/);
    const paths = (await lab.state()).received.map((r) => r.path);
    assert.deepEqual(paths.filter((p) => p.startsWith("/v1/")), [
      "/v1/chat/completions?trace=1",
      "/v1/chat/completions?q=%41",
      "/v1/chat/completions",
      "/v1/chat/completions",
    ]);
  });
});

Deno.test("smuggling attempts get 400 or 501 in the OpenAI shape and the connection closes; nothing queued", async () => {
  await withHomelabProxy([{ id: "a" }], "", async ({ lab, proxy }) => {
    const port = Number(new URL(proxy.url).port);
    const body = JSON.stringify(chatBody("a"));
    const head =
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    const cases: [string, string, string][] = [
      [`Content-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n`, "400", "bad_request"],
      [`Transfer-Encoding: gzip\r\n`, "501", "not_implemented"],
      [`Content-Length: ${body.length}\r\nContent-Length: 3\r\n`, "400", "bad_request"],
      [`Content-Length : ${body.length}\r\n`, "400", "bad_request"],
    ];
    for (const [fields, status, code] of cases) {
      // A second request follows in the same write: it must not be read as one.
      const text = await exchange(
        port,
        `${head}${fields}\r\n${body}${head}Content-Length: 2\r\n\r\n{}`,
      );
      assert.match(text, new RegExp(`^HTTP/1\\.1 ${status} `), fields);
      assert.equal(text.match(/HTTP\/1\.1 /g)?.length, 1, `one answer only: ${fields}`);
      assert.equal(JSON.parse(text.slice(text.indexOf("\r\n\r\n") + 4)).error.code, code);
    }
    const metrics = await (await fetch(`${proxy.url}/metrics`)).json();
    assert.equal(metrics.total_requests, 0);
    assert.deepEqual(await lab.running(), []);
  });
});
