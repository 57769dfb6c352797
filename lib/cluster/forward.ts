/**
 * @module
 * Sends a request to the peer that will queue it and hands its answer back as it comes: the
 * body verbatim, the stream chunk by chunk, the client's leaving passed on as the end of the
 * peer's connection (so its queue drops the request, or its backend sees the disconnect).
 */
import {
  forwardedRequestHeaderList,
  isEventStream,
  relayedResponseHeaderList,
} from "../http_headers.ts";
import { messageOf } from "../errors.ts";
import { readerSource, streamOf } from "../chunk_source.ts";
import { type Answer, CompleteAnswer } from "../answer.ts";
import { HOP_HEADER } from "./hop.ts";

/** The peer could not be reached at all: nothing got to it, so the request may go elsewhere. */
export class PeerUnreachableError extends Error {
  constructor(peer: string, cause: unknown) {
    super(`Node '${peer}' could not be reached (${messageOf(cause)})`, { cause });
    this.name = "PeerUnreachableError";
  }
}

/**
 * The peer took the request and went away before answering: it may have run it, so the
 * request is not sent anywhere else.
 */
export class PeerFailedError extends Error {
  constructor(peer: string, cause: unknown) {
    super(`Node '${peer}' went away before it answered (${messageOf(cause)})`, { cause });
    this.name = "PeerFailedError";
  }
}

export interface Forwarded {
  /** The request's id, kept by the peer for log lines that match. */
  id: string;
  method: string;
  /** Path and query, as the client sent them. */
  path: string;
  /** The headers to send on (without the client's key when the proxy checked it). */
  headers: Headers;
  body: Uint8Array<ArrayBuffer>;
  /** Aborts when the client leaves, or the forward must give up. */
  signal: AbortSignal;
  /**
   * Called once the answer is through: a document read whole, a stream ended, broken or
   * cancelled. Not called when the forward throws.
   */
  onEnd?: () => void;
}

/**
 * A fetch that failed before the connection was made: refused, unknown host, unreachable
 * network. Deno words these "client error (Connect)" or names DNS.
 */
function beforeConnecting(err: unknown): boolean {
  return /\(Connect\)|dns error|failed to lookup|connection refused|os error 111|os error 113/i
    .test(messageOf(err) + " " + messageOf((err as Error)?.cause));
}

/** How long a connection to a peer may take before the peer counts as unreachable. */
const CONNECT_TIMEOUT_MS = 3000;

/**
 * Opens and closes a TCP connection to `peer`. fetch has no connect timeout: a peer whose host
 * vanished without a trace (powered off, unplugged, dropped by a firewall: no RST comes back)
 * would hold a forward until the kernel gives up on the connection, about two minutes.
 * @throws {PeerUnreachableError} when no connection is made within `timeoutMs`.
 */
export async function probePeer(
  peer: { node: string; url: string },
  timeoutMs = CONNECT_TIMEOUT_MS,
): Promise<void> {
  const url = new URL(peer.url);
  const connecting = Deno.connect({
    hostname: url.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: Number(url.port || (url.protocol === "https:" ? 443 : 80)),
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no connection within ${timeoutMs} ms`)),
      timeoutMs,
    );
  });
  try {
    (await Promise.race([connecting, late])).close();
  } catch (err) {
    // A connection made after all is closed when it comes.
    connecting.then((conn) => conn.close(), () => {});
    throw new PeerUnreachableError(peer.node, err);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The peer's answer to `request`.
 * @throws {PeerUnreachableError} when no connection could be made.
 * @throws {PeerFailedError} when it broke after the request was on its way.
 */
export async function forwardToPeer(
  peer: { node: string; url: string },
  request: Forwarded,
  hop: string,
): Promise<Answer> {
  // Name-value lists, not Headers: fetch and Response take them without a second copy.
  const headers = forwardedRequestHeaderList(request.headers, [
    [HOP_HEADER, hop],
    ["x-request-id", request.id],
  ]);
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
    if (beforeConnecting(err)) throw new PeerUnreachableError(peer.node, err);
    throw new PeerFailedError(peer.node, err);
  }
  const { status, statusText } = res;
  const answerHeaders = relayedResponseHeaderList(res.headers, [["x-lqp-node", peer.node]]);
  if (res.body !== null && isEventStream(res.headers)) {
    const { onEnd } = request;
    return new Response(onEnd ? untilEnd(res.body, onEnd) : res.body, {
      status,
      statusText,
      headers: answerHeaders,
    });
  }
  // A document goes to the client in one write once complete (lib/http_server.ts): read
  // natively here, it is done when this returns, and the forward with it.
  let body = new Uint8Array(0);
  try {
    if (res.body !== null) body = new Uint8Array(await res.arrayBuffer());
  } catch (err) {
    if (request.signal.aborted) throw err;
    throw new PeerFailedError(peer.node, err);
  }
  request.onEnd?.();
  return new CompleteAnswer(status, statusText, answerHeaders, body);
}

/**
 * `body` as it comes, with `done` called when it ends, breaks or is cancelled. Pull-based
 * with no buffer of its own (`streamOf`), so a stream keeps its pacing.
 */
function untilEnd(
  body: ReadableStream<Uint8Array>,
  done: () => void,
): ReadableStream<Uint8Array> {
  const source = readerSource(body);
  return streamOf({
    async read() {
      try {
        const chunk = await source.read();
        if (chunk === null) done();
        return chunk;
      } catch (err) {
        done();
        throw err;
      }
    },
    cancel(reason) {
      done();
      return source.cancel(reason);
    },
  });
}
