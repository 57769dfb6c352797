/**
 * @module
 * Sends a request to the peer that will queue it and hands its answer back as it comes: the
 * body verbatim, the stream chunk by chunk, the client's leaving passed on as the end of the
 * peer's connection (so its queue drops the request, or its backend sees the disconnect).
 */
import { HOP_HEADER } from "./hop.ts";

/** Headers about one connection, not the request, plus our own credentials. */
const NOT_FORWARDED = [
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
  "host",
  "content-length",
  // The first node checked the key; the peer trusts the hop header instead.
  "authorization",
  "x-api-key",
];

/** The peer did not answer at all: nothing reached it, so the request may go elsewhere. */
export class PeerUnreachableError extends Error {
  constructor(readonly peer: string, cause: unknown) {
    super(`Node '${peer}' did not answer`, { cause });
    this.name = "PeerUnreachableError";
  }
}

export interface Forwarded {
  method: string;
  /** Path and query, as the client sent them. */
  path: string;
  headers: Headers;
  body: Uint8Array<ArrayBuffer>;
  /** Aborts when the client leaves. */
  signal: AbortSignal;
}

/**
 * The peer's answer to `request`.
 * @throws {PeerUnreachableError} when no response came (refused, reset, unknown host).
 */
export async function forwardToPeer(
  peer: { node: string; url: string },
  request: Forwarded,
  hop: string,
): Promise<Response> {
  const headers = new Headers(request.headers);
  for (const name of NOT_FORWARDED) headers.delete(name);
  headers.set(HOP_HEADER, hop);
  let res: Response;
  try {
    res = await fetch(peer.url + request.path, {
      method: request.method,
      headers,
      body: request.body,
      signal: request.signal,
      redirect: "manual",
    });
  } catch (err) {
    if (request.signal.aborted) throw err;
    throw new PeerUnreachableError(peer.node, err);
  }
  const out = new Headers(res.headers);
  // fetch already undid any content-encoding, and the length is the relay's to set.
  for (const name of [...NOT_FORWARDED, "content-encoding"]) out.delete(name);
  out.set("x-lqp-node", peer.node);
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers: out });
}
