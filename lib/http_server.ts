/**
 * @module
 * The proxy's HTTP/1.1 server: a fetch handler (Hono's) served on Deno's `node:http`.
 *
 * Not `Deno.serve`, for two reasons (docs/client_disconnects.md has the reproduction):
 * - Deno.serve stops watching a connection for the client's FIN or RST while no response has
 *   started, once the request body arrived in a later read than its head, which is what
 *   httpx, the Python openai client and Node's clients do. A client that left while queued
 *   stayed queued and reached a backend. node:http sees every close.
 * - Deno.serve has no connection-level limits; node:http has header, body and idle timeouts
 *   and a connection count, which a proxy open to a LAN needs.
 *
 * The Request handed to the handler carries an AbortSignal that aborts when the client goes
 * before its response ended, and a body that is read only when the handler asks for it.
 *
 * Over 350 lines on purpose: the adapter and the connection limits act on the same sockets.
 */
import { createServer, type IncomingMessage, type ServerResponse, STATUS_CODES } from "node:http";
import { Buffer } from "node:buffer";
import type { Socket } from "node:net";
import {
  type ApiError,
  clientTooSlow,
  malformedHttp,
  messageOf,
  toApiError,
  tooManyConnections,
} from "./errors.ts";
import type { Logger } from "./log.ts";
import { chunkSourceOf, readerSource } from "./chunk_source.ts";

export type FetchHandler = (request: Request) => Response | Promise<Response>;

export interface ConnectionLimits {
  /** The request line and headers must arrive within this many ms of the connection. */
  headerTimeoutMs: number;
  /** The body must have arrived this many ms after the headers. */
  bodyTimeoutMs: number;
  /** A keep-alive connection with no request for this many ms is closed. */
  idleTimeoutMs: number;
  /**
   * Connections held at once; more are closed as they arrive, but for a few let in briefly to
   * ask for /health or /metrics.
   */
  maxConnections: number;
}

export interface ServeOptions extends ConnectionLimits {
  hostname: string;
  port: number;
  log: Logger;
  /** Kept up to date by the server. */
  stats?: ConnectionStats;
}

export interface HttpServer {
  /** Where it listens (the port the OS picked when asked for 0). */
  readonly hostname: string;
  readonly port: number;
  /** Stops accepting; resolves once every response ended and every connection closed. */
  shutdown(): Promise<void>;
}

/** How long a shutdown lets idle connections close by themselves before cutting them. */
const CLOSE_GRACE_MS = 500;
/** How often node:http checks its header and body timeouts. */
const TIMEOUT_CHECK_MS = 500;
/** Connections past `max_connections` let in for a health check, and for how long. */
const HEALTH_RESERVE = 16;
const HEALTH_RESERVE_MS = 2000;
const HEALTH_PATHS = new Set(["/health", "/metrics", "/metrics?format=prometheus"]);

/** An error response written straight to a socket, for requests no handler sees. */
function rawError(error: ApiError): string {
  const body = JSON.stringify(error.toJSON());
  return `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status]}\r\n` +
    `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
    `connection: close\r\n\r\n${body}`;
}

/** An error response for a request the routes never see; the connection closes after it. */
function writeError(res: ServerResponse, error: ApiError): void {
  res.writeHead(error.status, {
    ...error.headers,
    "content-type": "application/json",
    connection: "close",
  });
  res.end(JSON.stringify(error.toJSON()));
}

/** Connections as the server sees them, for /metrics. */
export class ConnectionStats {
  /** Open right now. */
  open = 0;
  /** Closed on arrival because `max_connections` were open. */
  refused = 0;
  /** Closed for sending their request too slowly (header or body timeout). */
  timedOut = 0;
}

export function serveHttp(handler: FetchHandler, options: ServeOptions): Promise<HttpServer> {
  const { log } = options;
  const server = createServer({
    connectionsCheckingInterval: TIMEOUT_CHECK_MS,
    headersTimeout: options.headerTimeoutMs,
    // node:http's requestTimeout covers the headers and the body together.
    requestTimeout: options.headerTimeoutMs + options.bodyTimeoutMs,
    keepAliveTimeout: options.idleTimeoutMs,
  }, (req, res) => handle(req, res));
  const stats = options.stats ?? new ConnectionStats();
  let active = 0;
  /** Start of the current stretch at the connection cap, and how many were closed in it. */
  let refusedSince: number | null = null;
  let refused = 0;
  const idleWaiters: (() => void)[] = [];

  // Past the cap, a few more connections are let in for health checks only, each for a
  // moment: /health stays answerable while stalled clients hold every regular place.
  const overflow = new WeakSet<Socket>();
  server.on("connection", (socket: Socket) => {
    if (stats.open >= options.maxConnections) {
      if (refusedSince === null) {
        refusedSince = Date.now();
        log.warn("max_connections_reached", {
          max_connections: options.maxConnections,
          note: "new connections are closed until some end; /health and /metrics still answer",
        });
      }
      if (stats.open >= options.maxConnections + HEALTH_RESERVE) {
        stats.refused++;
        refused++;
        return socket.destroy();
      }
      overflow.add(socket);
      socket.setTimeout(HEALTH_RESERVE_MS, () => socket.destroy());
    } else if (refusedSince !== null) {
      log.info("connections_below_cap", {
        max_connections: options.maxConnections,
        refused,
        refused_for_ms: Date.now() - refusedSince,
      });
      refusedSince = null;
      refused = 0;
    }
    stats.open++;
    socket.once("close", () => stats.open--);
  });
  server.on("clientError", (err: Error & { code?: string }, socket: Socket) => {
    if (!socket.writable) return socket.destroy();
    if (err.code === "ERR_HTTP_REQUEST_TIMEOUT") {
      stats.timedOut++;
      const { headerTimeoutMs, bodyTimeoutMs } = options;
      return socket.end(rawError(clientTooSlow(headerTimeoutMs / 1000, bodyTimeoutMs / 1000)));
    }
    socket.end(rawError(
      err.code === "HPE_HEADER_OVERFLOW"
        ? malformedHttp(431, "Request headers are too large")
        : malformedHttp(400, `Malformed HTTP request (${err.code ?? err.message})`),
    ));
  });

  function handle(req: IncomingMessage, res: ServerResponse): void {
    if (overflow.has(req.socket) && !HEALTH_PATHS.has(req.url ?? "")) {
      stats.refused++;
      refused++;
      return writeError(res, tooManyConnections(options.maxConnections));
    }
    active++;
    const gone = new AbortController();
    res.once("close", () => {
      if (!res.writableFinished) gone.abort(new ClientGoneError());
      if (--active === 0) { for (const wake of idleWaiters.splice(0)) wake(); }
    });
    let request: Request;
    try {
      request = toRequest(req, origin, gone.signal);
    } catch (err) {
      const detail = messageOf(err);
      return writeError(res, malformedHttp(400, `Malformed request: ${detail}`));
    }
    let answer: Promise<Response> | Response;
    try {
      answer = handler(request);
    } catch (err) {
      answer = Promise.reject(err);
    }
    Promise.resolve(answer)
      .then((response) => send(req, res, response))
      .catch((err) => {
        log.error("response_failed", { error: err instanceof Error ? err.stack : String(err) });
        try {
          if (res.headersSent) res.destroy();
          else writeError(res, toApiError(err, "unknown"));
        } catch {
          res.destroy();
        }
      });
  }

  let origin = "";

  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.hostname, () => {
      server.off("error", reject);
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : options.port;
      // Routes see this origin; the client's Host header stays in the headers.
      origin = `http://${
        options.hostname.includes(":") ? `[${options.hostname}]` : options.hostname
      }:${port}`;
      resolve({
        hostname: options.hostname,
        port,
        async shutdown() {
          const closed = new Promise<void>((done) => server.close(() => done()));
          server.closeIdleConnections();
          if (active > 0) await new Promise<void>((wake) => idleWaiters.push(wake));
          // Every response is written; the connections that carried them are idle now and
          // close with a FIN. Destroying them at once could reset one whose last response
          // the client had not read yet.
          server.closeIdleConnections();
          const cut = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
          await closed;
          clearTimeout(cut);
        },
      });
    });
  });
}

/** The reason a request's signal aborts with when its client went away. */
export class ClientGoneError extends Error {
  constructor() {
    super("The client closed the connection");
    this.name = "ClientGoneError";
  }
}

function toRequest(req: IncomingMessage, origin: string, signal: AbortSignal): Request {
  const headers = new Headers();
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) headers.append(raw[i], raw[i + 1]);
  const method = req.method ?? "GET";
  const path = req.url ?? "/";
  if (!path.startsWith("/")) throw new Error(`unsupported request target '${path.slice(0, 100)}'`);
  // HTTP/1.1: a request has a body only when it says so (RFC 9112 §6.3).
  const declared = req.headers["content-length"];
  const hasBody = req.headers["transfer-encoding"] !== undefined ||
    (declared !== undefined && declared !== "0");
  return new Request(origin + path, {
    method,
    headers,
    signal,
    body: hasBody && method !== "GET" && method !== "HEAD" ? bodyOf(req) : null,
    // @ts-expect-error: Deno's RequestInit takes `duplex` for stream bodies; lib.dom lacks it.
    duplex: "half",
  });
}

/**
 * The request body as a web stream that reads from the socket only when asked: nothing is
 * read before the handler wants it (an API key is checked first), and one chunk at a time.
 */
function bodyOf(req: IncomingMessage): ReadableStream<Uint8Array> {
  let listening = false;
  // Events can still come after the reader gave up (cancel) or the stream ended: a
  // controller call then would throw from an event listener and take the process down.
  let open = true;
  const end = (how: () => void) => {
    if (!open) return;
    open = false;
    how();
  };
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (!listening) {
        listening = true;
        req.on("data", (chunk: Uint8Array) => {
          req.pause();
          if (open) {
            controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
          }
        });
        req.once("end", () => end(() => controller.close()));
        req.once("error", (err) => end(() => controller.error(err)));
        req.once("close", () => {
          if (!req.complete) end(() => controller.error(new ClientGoneError()));
        });
      }
      req.resume();
    },
    cancel() {
      // The handler answered without the rest of the body: stop reading it.
      open = false;
      req.pause();
    },
  }, { highWaterMark: 0 });
}

/**
 * Writes `response`. Event streams go out chunk by chunk as they come (with backpressure), read
 * from the relay's ChunkSource directly when it made the response; anything else is a complete
 * document and goes out in one write with its length.
 */
async function send(req: IncomingMessage, res: ServerResponse, response: Response): Promise<void> {
  if (res.destroyed) {
    await response.body?.cancel(new ClientGoneError());
    return;
  }
  // One flat list for writeHead: set-cookie stays several headers, nothing is validated twice.
  const head: string[] = [];
  let eventStream = false;
  response.headers.forEach((value, name) => {
    if (name === "content-length") return;
    if (name === "content-type") eventStream = value.toLowerCase().startsWith("text/event-stream");
    head.push(name, value);
  });
  // Unread body left on the socket (an answer given before it arrived): do not read on.
  if (!req.complete) head.push("connection", "close");
  const body = response.body;
  if (!eventStream) {
    const bytes = body === null ? null : new Uint8Array(await response.arrayBuffer());
    if (res.destroyed) return;
    head.push("content-length", String(bytes?.byteLength ?? 0));
    res.writeHead(response.status, head);
    res.end(bytes);
    return;
  }
  res.writeHead(response.status, head);
  res.flushHeaders();
  const source = chunkSourceOf(response) ?? readerSource(body!);
  const onClose = () => {
    if (!res.writableFinished) source.cancel(new ClientGoneError()).catch(() => {});
  };
  res.once("close", onClose);
  try {
    for (let chunk = await source.read(); chunk !== null; chunk = await source.read()) {
      if (res.destroyed) return;
      if (!res.write(chunk)) await drained(res);
    }
    if (!res.destroyed) res.end();
  } catch {
    // The body broke or was cancelled because the client left; nothing more to send.
    res.destroy();
  } finally {
    res.off("close", onClose);
  }
}

function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.once("drain", done);
    res.once("close", done);
  });
}
