/**
 * The floor for any proxy written on Deno: the smallest passthrough Deno.serve + fetch can
 * make (no routing, queue or checks). The benchmark runs it beside ours and nginx, so the
 * table shows how much of our cost is the runtime's.
 * Usage: deno run --allow-net bench/floor_proxy.ts UPSTREAM_ORIGIN PORT
 */
const [upstream, port] = Deno.args;

Deno.serve({ hostname: "127.0.0.1", port: Number(port), onListen() {} }, async (req) => {
  const url = new URL(req.url);
  const res = await fetch(upstream + url.pathname + url.search, {
    method: req.method,
    headers: req.headers,
    body: req.method === "GET" || req.method === "HEAD" ? undefined : await req.arrayBuffer(),
  });
  return new Response(res.body, { status: res.status, headers: res.headers });
});
