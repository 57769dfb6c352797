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
  // The proxy read the whole body already; a next hop must not wait to be asked for it.
  "expect",
]);

/** Whether a header describes one hop (the connection, its framing), not the message. */
export function isHopByHop(name: string): boolean {
  return HOP_BY_HOP.has(name);
}

/** fetch already decoded the body, so the length and encoding no longer describe it. */
const DROP_FROM_RESPONSE = new Set([...HOP_BY_HOP, "content-encoding"]);

/** A name-value list for a RequestInit or ResponseInit: cheaper for fetch to take than Headers. */
export type HeaderList = [string, string][];

/**
 * `from` without `drop` and without the names `set` gives, then `set` (replacing those). forEach,
 * not for…of: Deno's Headers iterator costs several times more per header (the same lowercased,
 * combined list, set-cookie kept apart, either way).
 */
function headerList(from: Headers, drop: Set<string>, set: HeaderList = []): HeaderList {
  const out: HeaderList = [];
  from.forEach((value, name) => {
    if (!drop.has(name) && !set.some(([replaced]) => replaced === name)) out.push([name, value]);
  });
  out.push(...set);
  return out;
}

/**
 * A request's headers as the next hop should get them, as a list, with `set` (lowercase names)
 * in place of any the client sent under those names.
 */
export function forwardedRequestHeaderList(from: Headers, set: HeaderList): HeaderList {
  return headerList(from, HOP_BY_HOP, set);
}

/** An answer's headers as the client should get them, as a list, with `set` added or replaced. */
export function relayedResponseHeaderList(from: Headers, set: HeaderList): HeaderList {
  return headerList(from, DROP_FROM_RESPONSE, set);
}

/** Whether an answer is an event stream (relayed chunk by chunk, never read whole). */
export function isEventStream(headers: Headers): boolean {
  return isEventStreamType(headers.get("content-type") ?? "");
}

/** Whether a content-type is an event stream's. */
export function isEventStreamType(contentType: string): boolean {
  return contentType.toLowerCase().startsWith("text/event-stream");
}
