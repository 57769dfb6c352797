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
const [upstream, port] = Deno.args;
const origin = new URL(upstream);
const encoder = new TextEncoder();
const decoder = new TextDecoder("latin1");
const HEAD_END = "\r\n\r\n";
/** Header lines the relay sets itself. */
const OWN_HEADERS = /^(host|connection):/i;

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

async function relay(client: Deno.TcpConn): Promise<void> {
  client.setNoDelay(true);
  const buffer = new Uint8Array(16384);
  let end = 0;
  let headEnd = -1;
  while (headEnd < 0) {
    const n = await client.read(buffer.subarray(end));
    if (n === null) return;
    end += n;
    headEnd = decoder.decode(buffer.subarray(0, end)).indexOf(HEAD_END);
    if (headEnd < 0 && end === buffer.length) return;
  }
  const lines = decoder.decode(buffer.subarray(0, headEnd)).split("\r\n");
  const length = Number(/^content-length:\s*(\d+)/im.exec(lines.join("\n"))?.[1] ?? 0);
  const bodyEnd = headEnd + HEAD_END.length + length;
  if (bodyEnd > buffer.length) return;
  while (end < bodyEnd) {
    const n = await client.read(buffer.subarray(end));
    if (n === null) return;
    end += n;
  }
  const head = lines.filter((line) => !OWN_HEADERS.test(line)).join("\r\n") +
    `\r\nhost: ${origin.host}\r\nconnection: close${HEAD_END}`;
  const request = new Uint8Array(head.length + length);
  request.set(encoder.encode(head));
  request.set(buffer.subarray(headEnd + HEAD_END.length, bodyEnd), head.length);
  const backend = await Deno.connect({ hostname: origin.hostname, port: Number(origin.port) });
  try {
    backend.setNoDelay(true);
    await writeAll(backend, request);
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
