/**
 * The proxy's HTTP/1.1 client for its backends (lib/backend_client.ts), against a scripted
 * backend on a real socket: what it sends, the ways an answer's body can end, when it keeps a
 * connection and when it must not, and a cancel reaching the backend as a closed connection.
 * The proxy's own use of it (streams, cancels, retries) is covered by the serving tests.
 */
import assert from "node:assert/strict";
import { BackendClient, BackendProtocolError } from "../lib/backend_client.ts";
import { headEnd, latin1 } from "../lib/http1.ts";
import { waitFor } from "./support/wait_for.ts";

const encode = (text: string) => new TextEncoder().encode(text);
const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

/** One request as the backend read it. */
interface Seen {
  connection: number;
  head: string;
  body: string;
}

/**
 * A backend whose every answer is written by `answer`, on the connection the request came on.
 * It reads one request at a time (Content-Length bodies only, as the client sends).
 */
class ScriptedBackend {
  readonly seen: Seen[] = [];
  connections = 0;
  /** Connections whose client closed them (EOF or reset while the backend read). */
  closedByClient = 0;
  readonly #listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  readonly #conns = new Set<Deno.Conn>();
  readonly #served: Promise<void>;

  constructor(readonly answer: (conn: Deno.Conn, seen: Seen) => Promise<void>) {
    this.#served = this.#accept();
  }

  get url(): string {
    return `http://127.0.0.1:${this.#listener.addr.port}`;
  }

  async #accept(): Promise<void> {
    const handlers: Promise<void>[] = [];
    try {
      for await (const conn of this.#listener) handlers.push(this.#serve(conn));
    } catch {
      // the listener closed
    }
    await Promise.all(handlers);
  }

  async #serve(conn: Deno.Conn): Promise<void> {
    const id = ++this.connections;
    this.#conns.add(conn);
    let buf = new Uint8Array(0);
    const more = async () => {
      const chunk = new Uint8Array(65536);
      const n = await conn.read(chunk).catch(() => null);
      if (n === null) return false;
      const joined = new Uint8Array(buf.length + n);
      joined.set(buf);
      joined.set(chunk.subarray(0, n), buf.length);
      buf = joined;
      return true;
    };
    try {
      for (;;) {
        let end: number;
        while ((end = headEnd(buf, 0, buf.length)) === -1) {
          if (!(await more())) {
            this.closedByClient++;
            return;
          }
        }
        const head = latin1(buf.subarray(0, end));
        const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
        while (buf.length < end + length) if (!(await more())) return;
        const seen = { connection: id, head, body: decode(buf.subarray(end, end + length)) };
        buf = buf.slice(end + length);
        this.seen.push(seen);
        await this.answer(conn, seen);
      }
    } catch {
      // the connection was closed by either side
    } finally {
      this.#conns.delete(conn);
      try {
        conn.close();
      } catch {
        // closed by the answer already
      }
    }
  }

  async close(): Promise<void> {
    this.#listener.close();
    for (const conn of this.#conns) {
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
    await this.#served;
  }
}

/** Writes `text` on `conn`. */
const write = (conn: Deno.Conn, text: string) => conn.write(encode(text)).then(() => {});

/** The head of an event stream sent chunked, as llama-server sends one. */
const STREAM_HEAD =
  "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

const json = (body: string, extra = "") =>
  `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n${extra}content-length: ${
    encode(body).length
  }\r\n\r\n${body}`;

async function withBackend(
  answer: (conn: Deno.Conn, seen: Seen) => Promise<void>,
  test: (backend: ScriptedBackend, client: BackendClient) => Promise<void>,
) {
  const backend = new ScriptedBackend(answer);
  const client = new BackendClient();
  try {
    await test(backend, client);
  } finally {
    client.close();
    await backend.close();
  }
}

function post(client: BackendClient, url: string, body: string, signal?: AbortSignal) {
  return client.send({
    method: "POST",
    url: `${url}/v1/chat/completions`,
    headers: [["content-type", "application/json"], ["x-request-id", "req_1"]],
    body: encode(body),
    signal: signal ?? new AbortController().signal,
  });
}

Deno.test("a run of requests shares one kept connection, each sent with its host and length", async () => {
  await withBackend(
    (conn, seen) => write(conn, json(`{"echo":${seen.body}}`)),
    async (backend, client) => {
      for (let i = 0; i < 3; i++) {
        const res = await post(client, backend.url, String(i));
        assert.equal(res.status, 200);
        assert.equal(decode(await res.body.bytes()), `{"echo":${i}}`);
      }
      assert.equal(backend.connections, 1);
      assert.deepEqual(backend.seen.map((s) => s.connection), [1, 1, 1]);
      const head = backend.seen[0].head;
      assert.match(head, /^POST \/v1\/chat\/completions HTTP\/1\.1\r\n/);
      assert.match(head, new RegExp(`\r\nhost: ${new URL(backend.url).host}\r\n`));
      assert.match(head, /\r\ncontent-length: 1\r\n/);
      assert.match(head, /\r\nx-request-id: req_1\r\n/);
    },
  );
});

Deno.test("a chunked answer is handed over piece by piece as the backend sends it", async () => {
  let sendRest!: () => void;
  const rest = new Promise<void>((resolve) => sendRest = resolve);
  await withBackend(
    async (conn, seen) => {
      if (seen.body === "stream") {
        await write(conn, `${STREAM_HEAD}6\r\ndata: \r\n`);
        await rest;
        await write(conn, "3\r\none\r\n4\r\n two\r\n0\r\n\r\n");
      } else await write(conn, json("{}"));
    },
    async (backend, client) => {
      const res = await post(client, backend.url, "stream");
      assert.deepEqual(res.headers, [["content-type", "text/event-stream"]]);
      // The first piece arrives while the backend still holds the rest back.
      assert.equal(decode((await res.body.read())!), "data: ");
      sendRest();
      const pieces: string[] = [];
      for (let piece = await res.body.read(); piece !== null; piece = await res.body.read()) {
        pieces.push(decode(piece));
      }
      // The two chunks left were written at once: they come on as one piece.
      assert.deepEqual(pieces, ["one two"]);
      // Read to its end, the connection carries the next request.
      await (await post(client, backend.url, "next")).body.bytes();
      assert.equal(backend.connections, 1);
    },
  );
});

Deno.test("an answer without a length ends when the backend closes; that connection is not reused", async () => {
  await withBackend(
    async (conn) => {
      await write(conn, 'HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{"old":1}');
      conn.close();
    },
    async (backend, client) => {
      for (let i = 0; i < 2; i++) {
        assert.equal(
          decode(await (await post(client, backend.url, "x")).body.bytes()),
          '{"old":1}',
        );
      }
      assert.equal(backend.connections, 2);
    },
  );
});

Deno.test("a kept connection the backend closed meanwhile is replaced; the request runs once", async () => {
  let closedOne!: () => void;
  const closed = new Promise<void>((resolve) => closedOne = resolve);
  await withBackend(
    async (conn) => {
      // Keep-alive as far as the client can tell, then closed (a backend's idle timeout, or
      // a new container on the same port).
      await write(conn, json("{}"));
      conn.close();
      closedOne();
    },
    async (backend, client) => {
      await (await post(client, backend.url, "first")).body.bytes();
      await closed;
      const res = await post(client, backend.url, "second");
      assert.equal(res.status, 200);
      await res.body.bytes();
      assert.equal(backend.connections, 2);
      assert.deepEqual(backend.seen.map((s) => s.body), ["first", "second"]);
    },
  );
});

Deno.test("aborting the request or cancelling the body while a read waits ends that read and closes the connection: the backend sees its client leave", async () => {
  for (const how of ["abort", "cancel"]) {
    await withBackend(
      (conn) => write(conn, `${STREAM_HEAD}5\r\nfirst\r\n`),
      async (backend, client) => {
        const abort = new AbortController();
        const res = await post(client, backend.url, "x", abort.signal);
        assert.equal(decode((await res.body.read())!), "first");
        const reading = res.body.read();
        if (how === "abort") {
          abort.abort(new Error("client left"));
          await assert.rejects(reading, /client left/);
        } else {
          await res.body.cancel();
          await assert.rejects(reading);
        }
        await waitFor(
          `the backend to see the connection close (${how})`,
          () => backend.closedByClient === 1,
        );
        // Nothing of that connection is reused.
        assert.equal(backend.connections, 1);
      },
    );
  }
});

/** Every piece `body.read()` hands over, to its end, as text. */
async function readPieces(body: { read(): Promise<Uint8Array | null> }): Promise<string> {
  let text = "";
  for (let piece = await body.read(); piece !== null; piece = await body.read()) {
    text += decode(piece);
  }
  return text;
}

Deno.test("read piece by piece, a body ends as its framing says: a length keeps the connection, a close does not", async () => {
  await withBackend(
    async (conn, seen) => {
      if (seen.body === "length") return await write(conn, json('{"a":1}'));
      await write(conn, 'HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{"b":2}');
      conn.close();
    },
    async (backend, client) => {
      for (let i = 0; i < 2; i++) {
        assert.equal(await readPieces((await post(client, backend.url, "length")).body), '{"a":1}');
      }
      assert.equal(backend.connections, 1);
      assert.equal(await readPieces((await post(client, backend.url, "close")).body), '{"b":2}');
      // The closed connection is gone: the next request opens one of its own.
      assert.equal(await readPieces((await post(client, backend.url, "length")).body), '{"a":1}');
      assert.equal(backend.connections, 2);
    },
  );
});

Deno.test("a chunked body cut by the backend's close, or broken by a bad chunk size, rejects the read; its connection is not reused", async () => {
  // Created before each request, so the backend's handler of that request waits on it.
  let goOn = Promise.withResolvers<void>();
  await withBackend(
    async (conn, seen) => {
      if (seen.body === "whole") return await write(conn, json("{}"));
      await write(conn, `${STREAM_HEAD}5\r\nfirst\r\n`);
      await goOn.promise;
      if (seen.body === "cut") conn.close();
      else await write(conn, "zz\r\n");
    },
    async (backend, client) => {
      const cases: [string, RegExp][] = [
        ["cut", /closed the connection mid-answer/],
        ["bad", /malformed chunked answer/],
      ];
      for (const [how, error] of cases) {
        goOn = Promise.withResolvers<void>();
        const res = await post(client, backend.url, how);
        assert.equal(decode((await res.body.read())!), "first");
        const reading = res.body.read();
        goOn.resolve();
        await assert.rejects(
          reading,
          (err: Error) => err instanceof BackendProtocolError && error.test(err.message),
        );
      }
      await (await post(client, backend.url, "whole")).body.bytes();
      // One connection for each broken body, and a new one after them.
      assert.equal(backend.connections, 3);
    },
  );
});

Deno.test("interim answers are skipped, the hop's own headers are not handed on, a folded value is joined", async () => {
  await withBackend(
    (conn) =>
      write(
        conn,
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: keep-alive\r\n" +
          "Keep-Alive: timeout=5\r\nX-Model: a\r\n  folded\r\nContent-Length: 2\r\n\r\n{}",
      ),
    async (backend, client) => {
      const res = await post(client, backend.url, "x");
      assert.equal(res.status, 200);
      assert.deepEqual(res.headers, [["x-model", "a folded"]]);
      assert.equal(decode(await res.body.bytes()), "{}");
    },
  );
});

Deno.test("a connection the backend says it closes is never reused, even after an empty answer", async () => {
  const answers = [
    "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    "HTTP/1.1 204 No Content\r\nConnection: Close\r\n\r\n",
    "HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n",
  ];
  await withBackend(
    async (conn, seen) => {
      await write(conn, answers[Number(seen.body)]);
      conn.close();
    },
    async (backend, client) => {
      const ask = async (i: number) => {
        const res = await post(client, backend.url, String(i));
        assert.equal((await res.body.bytes()).byteLength, 0);
      };
      // Two at once, then one: had the two gone back to the pool, the one would find only
      // dead connections, its retry included.
      for (const i of [0, 1, 2]) {
        await Promise.all([ask(i), ask(i)]);
        await ask(i);
      }
      // Each on its own connection: none was taken from the pool dead.
      assert.equal(backend.connections, 9);
      assert.equal(backend.seen.length, 9);
    },
  );
});

Deno.test("a connection the backend says it closes carries no second request, after a length, chunked, HTTP/1.0 or empty answer", async () => {
  const answers = [
    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
    "HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}",
    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: keep-alive, close\r\n\r\n",
  ];
  // The backend leaves its side open: a reuse would reach it as a second request.
  await withBackend(
    (conn, seen) => write(conn, answers[Number(seen.body)]),
    async (backend, client) => {
      for (const i of [0, 0, 1, 1, 2, 2, 3, 3]) {
        await (await post(client, backend.url, String(i))).body.bytes();
      }
      assert.equal(backend.connections, 8);
      assert.deepEqual(backend.seen.map((s) => s.connection), [1, 2, 3, 4, 5, 6, 7, 8]);
    },
  );
});

Deno.test("when every kept connection went stale at once, the retry takes a new one", async () => {
  let release!: () => void;
  const both = new Promise<void>((resolve) => release = resolve);
  const closing: Promise<void>[] = [];
  await withBackend(
    async (conn, seen) => {
      if (seen.body === "held") {
        if (backendHeld++ === 1) release();
        await both;
      }
      await write(conn, json("{}"));
      // Every connection closed after its answer, as a restarted backend would find them.
      if (seen.body === "held") closing.push(Promise.resolve(conn.close()));
    },
    async (backend, client) => {
      // Two at once: two connections, both kept.
      await Promise.all([post(client, backend.url, "held"), post(client, backend.url, "held")]
        .map(async (res) => (await res).body.bytes()));
      await Promise.all(closing);
      const res = await post(client, backend.url, "after");
      assert.equal(res.status, 200);
      await res.body.bytes();
      assert.equal(backend.connections, 3);
      assert.deepEqual(backend.seen.map((s) => s.body), ["held", "held", "after"]);
    },
  );
});
let backendHeld = 0;

Deno.test("a kept connection that fails long after the request was sent is not sent it again", async () => {
  await withBackend(
    async (conn, seen) => {
      if (seen.body === "first") return await write(conn, json("{}"));
      // Worked on it a while, then died without an answer.
      await new Promise((resolve) => setTimeout(resolve, 400));
      conn.close();
    },
    async (backend, client) => {
      await (await post(client, backend.url, "first")).body.bytes();
      await assert.rejects(post(client, backend.url, "second"), BackendProtocolError);
      assert.deepEqual(backend.seen.map((s) => s.body), ["first", "second"]);
    },
  );
});

Deno.test("an answer a Response could not carry is refused, and its connection closed: a bad name, status 600, a control character in the reason or a folded value, a fold of a dropped header, a status line that is not HTTP/1.x", async () => {
  const heads = [
    "HTTP/1.1 200 OK\r\nbad name: x",
    "HTTP/1.1 600 Odd\r\nx-a: 1",
    "HTTP/1.1 200 O\x01K\r\nx-a: 1",
    "HTTP/1.1 200 O\nK\r\nx-a: 1",
    "HTTP/1.2 200 OK\r\nx-a: 1",
    "HTTP/1.1 20 OK\r\nx-a: 1",
    "HTTP/1.1 2000 OK\r\nx-a: 1",
    "HTTP/1.1  200 OK\r\nx-a: 1",
    "HTTP/1.1 200 OK\r\nx-a: 1\r\n evil\nset-cookie: injected=1",
    "HTTP/1.1 200 OK\r\nconnection: keep-alive\r\n x-b: 2",
  ];
  for (const head of heads) {
    await withBackend(
      (conn) => write(conn, `${head}\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n`),
      async (backend, client) => {
        await assert.rejects(post(client, backend.url, "x"), BackendProtocolError);
        await waitFor(
          "the backend to see the connection close",
          () => backend.closedByClient === 1,
        );
      },
    );
  }
});

Deno.test("a refused connection and an answer that is not HTTP reject the request", async () => {
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = closed.addr.port;
  closed.close();
  const client = new BackendClient();
  try {
    await assert.rejects(
      post(client, `http://127.0.0.1:${port}`, "x"),
      Deno.errors.ConnectionRefused,
    );
  } finally {
    client.close();
  }
  await withBackend(
    (conn) => write(conn, "SSH-2.0-OpenSSH\r\n\r\n"),
    async (backend, client) => {
      await assert.rejects(post(client, backend.url, "x"), BackendProtocolError);
    },
  );
});
