/**
 * The floor for a proxy that serves on Deno's `node:http` and forwards with fetch: the body
 * read whole, the answer written with its length, event streams chunk by chunk. Nothing else:
 * no routing, queue or checks. The proxy served on `node:http` until it got its own HTTP/1.1
 * server (lib/http_server.ts; docs/client_disconnects.md says why not Deno.serve); the column
 * stays beside the bare Deno.serve floor to show what that server choice would cost.
 * Usage: deno run --allow-net bench/floor_node_proxy.ts UPSTREAM_ORIGIN PORT
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { Buffer } from "node:buffer";

const [upstream, port] = Deno.args;

createServer((req, res) => {
  // A client that leaves mid-request (wrk at the end of a run) must not end the server.
  relay(req, res).catch(() => res.destroy());
}).listen(Number(port), "127.0.0.1");

async function relay(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of req) chunks.push(chunk);
  const headers = new Headers();
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i].toLowerCase();
    if (name !== "host" && name !== "connection" && name !== "content-length") {
      headers.append(name, req.rawHeaders[i + 1]);
    }
  }
  const answer = await fetch(upstream + req.url, {
    method: req.method,
    headers,
    // One copy of the body, as the proxy keeps one (it forwards the bytes it checked).
    body: chunks.length === 0 ? undefined : new Uint8Array(Buffer.concat(chunks)),
  });
  const head: string[] = [];
  answer.headers.forEach((value, name) => {
    if (name !== "content-length" && name !== "transfer-encoding") head.push(name, value);
  });
  if ((answer.headers.get("content-type") ?? "").startsWith("text/event-stream")) {
    res.writeHead(answer.status, head);
    res.flushHeaders();
    for await (const chunk of answer.body!) res.write(chunk);
    res.end();
    return;
  }
  const bytes = new Uint8Array(await answer.arrayBuffer());
  res.writeHead(answer.status, [...head, "content-length", String(bytes.byteLength)]);
  res.end(bytes);
}
