/**
 * @module
 * Which headers pass when the proxy relays a message: those of one hop stay behind (RFC 9110
 * §7.6.1), and an answer fetch already decoded loses its length and encoding. Used for the
 * backends (lib/upstream.ts) and for peers (lib/cluster/forward.ts).
 */

/** Headers that describe one hop, not the message, plus ones fetch sets. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
  "content-length",
]);

/** fetch already decoded the body, so the length and encoding no longer describe it. */
const DROP_FROM_RESPONSE = new Set([...HOP_BY_HOP, "content-encoding"]);

function copyHeaders(from: Headers, drop: Set<string>): Headers {
  const out = new Headers();
  for (const [name, value] of from) if (!drop.has(name)) out.append(name, value);
  return out;
}

/** A request's headers as the next hop should get them. */
export function forwardedRequestHeaders(from: Headers): Headers {
  return copyHeaders(from, HOP_BY_HOP);
}

/** An answer's headers as the client should get them, its body decoded by fetch. */
export function relayedResponseHeaders(from: Headers): Headers {
  return copyHeaders(from, DROP_FROM_RESPONSE);
}
