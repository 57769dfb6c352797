/**
 * The least a relay written in JavaScript on `Deno.listen` does, as the proxy's own server and
 * backend client are: per connection, one request read (its head and a Content-Length body),
 * a new connection to the backend, the request written there, and the backend's bytes copied
 * to the client as each read brings them, unparsed and unframed, until the backend closes.
 * One request per connection on both sides (`connection: close`).
 *
 * The bench's many-streams part runs it beside the Deno.serve + fetch floor: what is left
 * between it and the proxy is the proxy's own JavaScript, not the runtime's async reads and
 * writes (which it does as the proxy does, one read op and one write op per chunk).
 * Usage: deno run --allow-net bench/floor_js_relay.ts UPSTREAM_ORIGIN PORT
 */
import { headEnd, latin1, withHead } from "../lib/http1.ts";

const [upstream, port] = Deno.args;
const origin = new URL(upstream);
/** Header lines the relay sets itself. */
const OWN_HEADERS = /^(host|connection):/i;

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

async function relay(client: Deno.TcpConn): Promise<void> {
  client.setNoDelay(true);
  const buffer = new Uint8Array(16384);
  let end = 0;
  let bodyAt = -1;
  while (bodyAt < 0) {
    const n = await client.read(buffer.subarray(end));
    if (n === null) return;
    // The blank line may straddle the last read: look from just before it.
    bodyAt = headEnd(buffer, Math.max(0, end - 3), end + n);
    end += n;
    if (bodyAt < 0 && end === buffer.length) return;
  }
  const lines = latin1(buffer.subarray(0, bodyAt - 4)).split("\r\n");
  const length = Number(/^content-length:\s*(\d+)/im.exec(lines.join("\n"))?.[1] ?? 0);
  const bodyEnd = bodyAt + length;
  if (bodyEnd > buffer.length) return;
  while (end < bodyEnd) {
    const n = await client.read(buffer.subarray(end));
    if (n === null) return;
    end += n;
  }
  const head = lines.filter((line) => !OWN_HEADERS.test(line)).join("\r\n") +
    `\r\nhost: ${origin.host}\r\nconnection: close\r\n\r\n`;
  const backend = await Deno.connect({ hostname: origin.hostname, port: Number(origin.port) });
  try {
    backend.setNoDelay(true);
    await writeAll(backend, withHead(head, buffer.subarray(bodyAt, bodyEnd)));
    for (let n = await backend.read(buffer); n !== null; n = await backend.read(buffer)) {
      await writeAll(client, buffer.subarray(0, n));
    }
  } finally {
    backend.close();
  }
}

const listener = Deno.listen({ hostname: "127.0.0.1", port: Number(port) });
for await (const conn of listener) {
  relay(conn).catch(() => {}).finally(() => {
    try {
      conn.close();
    } catch {
      // already closed
    }
  });
}
