/**
 * @module
 * The proxy's HTTP/1.1 server: a fetch handler (Hono's) served on plain TCP connections from
 * `Deno.listen`, with the framing in lib/http1.ts.
 *
 * Not `Deno.serve`, for two reasons (docs/client_disconnects.md has the reproduction):
 * - Deno.serve stops watching a connection for the client's FIN or RST while no response has
 *   started, once the request body arrived in a later read than its head, which is what
 *   httpx, the Python openai client and Node's clients do. A client that left while queued
 *   stayed queued and reached a backend.
 * - Deno.serve has no connection-level limits (header, body and idle timeouts, a connection
 *   count), which a proxy open to a LAN needs.
 * Not Deno's `node:http` either, which has both: turning its IncomingMessage into a Request and
 * the Response back through web streams cost more CPU per request than all of Deno.serve.
 *
 * Owning the connection, the server keeps one read open on it while a request is handled: EOF
 * or a reset there is the client leaving, and the request's signal aborts. Bytes that arrive
 * meanwhile (a pipelined request) are kept for after the answer.
 *
 * Over 350 lines on purpose: the connection's reads, writes and limits act on the same socket.
 */
import {
  type ApiError,
  clientTooSlow,
  malformedHttp,
  messageOf,
  toApiError,
  tooManyConnections,
} from "./errors.ts";
import type { Logger } from "./log.ts";
import { readerSource } from "./chunk_source.ts";
import { type Answer, answerBytes, cancelAnswer, CompleteAnswer, StreamAnswer } from "./answer.ts";
import { Deadlines } from "./deadlines.ts";
import { arrivedWithHead, type BodiedRequest } from "./body.ts";
import {
  ChunkedDecoder,
  headEnd,
  latin1,
  MalformedRequest,
  parseHead,
  type RequestHead,
  statusLine,
  targetParts,
  withHead,
} from "./http1.ts";
import { chunkFrame } from "./chunk_frame.ts";
import { isEventStreamType } from "./http_headers.ts";

export type FetchHandler = (request: Request) => Response | Promise<Response>;

/** A request handed to a direct route: what the server read, with no web Request built. */
export interface DirectRequest extends BodiedRequest {
  /** As sent (a web Request would upper-case `post`). */
  readonly method: string;
  /** The target's path as a URL reads it (dot segments resolved; escapes kept). */
  readonly pathname: string;
  /** The query with its `?`, or empty. */
  readonly search: string;
  /** Aborts (with a ClientGoneError) when the client leaves. */
  readonly signal: AbortSignal;
}

/** Requests a handler answers without a web Request being built for them. */
export interface DirectRoute {
  takes(method: string, pathname: string): boolean;
  answer(request: DirectRequest): Promise<Answer>;
}

export interface Handler {
  /** Every request the direct route does not take. */
  fetch: FetchHandler;
  /**
   * The hot path (the model requests): building a web Request and routing it through Hono
   * were ~10% of such a request's CPU.
   */
  direct?: DirectRoute;
}

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

/** Connections as the server sees them, for /metrics. */
export class ConnectionStats {
  /** Open right now. */
  open = 0;
  /** Closed on arrival because `max_connections` were open. */
  refused = 0;
  /** Closed for sending their request too slowly (header or body timeout). */
  timedOut = 0;
}

/** The reason a request's signal aborts with when its client went away. */
export class ClientGoneError extends Error {
  constructor() {
    super("The client closed the connection");
    this.name = "ClientGoneError";
  }
}

/** How long a shutdown lets connections finish their last answer before cutting them. */
const CLOSE_GRACE_MS = 500;
/** Connections past `max_connections` let in for a health check, and for how long. */
const HEALTH_RESERVE = 16;
const HEALTH_RESERVE_MS = 2000;
const HEALTH_PATHS = new Set(["/health", "/metrics", "/metrics?format=prometheus"]);
/** The largest request head taken (as node:http's default): more is 431. */
const MAX_HEAD_BYTES = 16 * 1024;
/** A connection's read buffer to begin with; heads and small bodies fit. */
const FIRST_BUFFER = 4096;
/** Reads of a large body (and a chunked one's buffer) go up to this size. */
const BODY_READ = 64 * 1024;
/** Pipelined bytes held while an answer is written; past this the connection is not read. */
const MAX_PIPELINED = 64 * 1024;
/**
 * Microtask turns an event stream's head waits for its first chunk, to go out in one write with
 * it. A chunk already read from the backend (it mostly comes in the same read as the status
 * line) takes 2 to come through the relay; one not here yet would be a backend still working
 * (a long prompt), and the head goes at once. No timer: a 2 ms one per stream cost ~17 µs.
 */
const AT_HAND_TURNS = 8;
/** After an answer given before the body arrived, unread bytes are drained this long. */
const LINGER_MS = 2000;

const CONTINUE = new TextEncoder().encode("HTTP/1.1 100 Continue\r\n\r\n");
const LAST_CHUNK = new TextEncoder().encode("0\r\n\r\n");
const EMPTY = new Uint8Array(0);
const encoder = new TextEncoder();

/** What a connection is waiting for, if anything with a deadline. */
type Wait = "header" | "body" | "idle" | "reserve";

export function serveHttp(handler: Handler, options: ServeOptions): Promise<HttpServer> {
  try {
    const server = new Server(handler, options);
    return Promise.resolve(server.start());
  } catch (err) {
    return Promise.reject(err);
  }
}

class Server {
  readonly stats: ConnectionStats;
  readonly origin: string;
  readonly #listener: Deno.TcpListener;
  readonly #connections = new Set<Connection>();
  /** The header, body and idle deadlines of every connection, on one timer. */
  readonly #deadlines = new Deadlines();
  /** Requests handed to the handler whose answer is not written yet. */
  #active = 0;
  #idleWaiters: (() => void)[] = [];
  #closedWaiters: (() => void)[] = [];
  closing = false;
  /** Start of the current stretch at the connection cap, and how many were closed in it. */
  #refusedSince: number | null = null;
  #refused = 0;

  constructor(readonly handler: Handler, readonly options: ServeOptions) {
    this.stats = options.stats ?? new ConnectionStats();
    this.#listener = Deno.listen({ hostname: options.hostname, port: options.port });
    const { hostname, port } = this.#listener.addr;
    // Routes see this origin; the client's Host header stays in the headers.
    this.origin = `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;
  }

  start(): HttpServer {
    this.#accept();
    return {
      hostname: this.options.hostname,
      port: this.#listener.addr.port,
      shutdown: () => this.#shutdown(),
    };
  }

  async #accept(): Promise<void> {
    while (!this.closing) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (err) {
        if (this.closing) return;
        // Out of descriptors, say: the connections that hold them end by their deadlines.
        this.options.log.warn("accept_failed", { error: messageOf(err) });
        await new Promise((wake) => setTimeout(wake, 100));
        continue;
      }
      this.#admit(conn);
    }
  }

  #admit(conn: Deno.TcpConn): void {
    const { maxConnections } = this.options;
    let overflow = false;
    // Past the cap, a few more connections are let in for health checks only, each for a
    // moment: /health stays answerable while stalled clients hold every regular place.
    if (this.stats.open >= maxConnections) {
      if (this.#refusedSince === null) {
        this.#refusedSince = Date.now();
        this.options.log.warn("max_connections_reached", {
          max_connections: maxConnections,
          note: "new connections are closed until some end; /health and /metrics still answer",
        });
      }
      if (this.stats.open >= maxConnections + HEALTH_RESERVE) {
        this.stats.refused++;
        this.#refused++;
        conn.close();
        return;
      }
      overflow = true;
    } else if (this.#refusedSince !== null) {
      this.options.log.info("connections_below_cap", {
        max_connections: maxConnections,
        refused: this.#refused,
        refused_for_ms: Date.now() - this.#refusedSince,
      });
      this.#refusedSince = null;
      this.#refused = 0;
    }
    this.stats.open++;
    try {
      // Each event of a stream goes out as it is written, not held for the next.
      conn.setNoDelay(true);
    } catch {
      // already reset by the client; the first read says so
    }
    const connection = new Connection(conn, this, overflow);
    this.#connections.add(connection);
    connection.run();
  }

  /** A connection closed: by either side, possibly before its handler finished. */
  closed(connection: Connection): void {
    this.#connections.delete(connection);
    connection.cancelDeadline?.();
    this.stats.open--;
    if (this.#connections.size === 0) { for (const wake of this.#closedWaiters.splice(0)) wake(); }
  }

  /** Refuses a request from a connection let in past the cap, unless it asks for health. */
  refuses(head: RequestHead): ApiError | null {
    if (HEALTH_PATHS.has(head.target)) return null;
    this.stats.refused++;
    this.#refused++;
    return tooManyConnections(this.options.maxConnections);
  }

  requestStarted(): void {
    this.#active++;
  }

  requestEnded(): void {
    if (--this.#active === 0) { for (const wake of this.#idleWaiters.splice(0)) wake(); }
  }

  /** Sets or clears when `connection` must have moved on from what it waits for. */
  deadline(connection: Connection, wait: Wait | null): void {
    connection.cancelDeadline?.();
    connection.cancelDeadline = null;
    if (wait === null) return;
    const { headerTimeoutMs, bodyTimeoutMs, idleTimeoutMs } = this.options;
    const ms = wait === "header"
      ? headerTimeoutMs
      : wait === "body"
      ? bodyTimeoutMs
      : wait === "idle"
      ? idleTimeoutMs
      : HEALTH_RESERVE_MS;
    connection.wait = wait;
    connection.cancelDeadline = this.#deadlines.after(ms, () => {
      connection.cancelDeadline = null;
      connection.expire();
    });
  }

  tooSlow(): ApiError {
    this.stats.timedOut++;
    const { headerTimeoutMs, bodyTimeoutMs } = this.options;
    return clientTooSlow(headerTimeoutMs / 1000, bodyTimeoutMs / 1000);
  }

  async #shutdown(): Promise<void> {
    this.closing = true;
    this.#listener.close();
    // Connections between requests close now; the others close after their answer.
    for (const connection of this.#connections) connection.closeIfIdle();
    if (this.#active > 0) await new Promise<void>((wake) => this.#idleWaiters.push(wake));
    if (this.#connections.size > 0) {
      // Every answer is written and its connection closing with a FIN. Cutting them at once
      // could reset one whose last answer the client had not read yet.
      const closed = new Promise<void>((wake) => this.#closedWaiters.push(wake));
      let cut: ReturnType<typeof setTimeout> | undefined;
      const grace = new Promise<void>((wake) => cut = setTimeout(wake, CLOSE_GRACE_MS));
      await Promise.race([closed, grace]);
      clearTimeout(cut);
      for (const connection of this.#connections) connection.destroy();
      if (this.#connections.size > 0) await closed;
    }
  }
}

/** One client connection: its requests one after another, each answered before the next. */
class Connection {
  wait: Wait | null = null;
  /** Cancels the pending deadline, if any (Server.deadline() sets it). */
  cancelDeadline: (() => void) | null = null;
  #buf = new Uint8Array(FIRST_BUFFER);
  /** Unread bytes are `#buf[#start, #end)`. */
  #start = 0;
  #end = 0;
  /** The read in flight, if any: true when bytes came, false at EOF or an error. */
  #reading: Promise<boolean> | null = null;
  /** The client closed its side, reset, or the server closed the connection. */
  #ended = false;
  #closed = false;
  /** The request being handled: its signal aborts when the client leaves. */
  #gone: AbortController | null = null;
  /** The current request's body was read to its end (or it had none). */
  #bodyDone = true;
  /** The server answered (408) on its own; the handler's answer is dropped. */
  #answeredBySelf = false;
  #onEnd: (() => void) | null = null;
  /** Answered early, the connection drains what the client still sends before it closes. */
  #lingering = false;

  constructor(
    readonly conn: Deno.TcpConn,
    readonly server: Server,
    readonly overflow: boolean,
  ) {}

  async run(): Promise<void> {
    this.server.deadline(this, this.overflow ? "reserve" : "header");
    try {
      let first = true;
      while (!this.#closed) {
        let head: RequestHead | null;
        try {
          head = await this.#readHead(first);
        } catch (err) {
          if (!(err instanceof MalformedRequest)) throw err;
          await this.#writeError(malformedHttp(err.status, err.message));
          return;
        }
        first = false;
        if (head === null) return;
        if (!(await this.#handle(head))) return;
      }
    } catch (err) {
      this.server.options.log.error("connection_failed", { error: messageOf(err) });
    } finally {
      // A lingering close ends the connection itself, once the client's upload was drained.
      if (!this.#lingering) this.#close();
    }
  }

  /** Called by the server when this connection's deadline passed. */
  expire(): void {
    if (this.wait === "header" || this.wait === "body") {
      // A request on its way too slowly gets 408; one the handler holds is answered here
      // and the handler's own answer (a broken body's 400) dropped. Everything the client
      // sent was read, so the close that follows is a clean FIN.
      if (this.wait === "body") this.#answeredBySelf = true;
      this.#writeError(this.server.tooSlow(), false);
    } else {
      this.#close();
    }
  }

  closeIfIdle(): void {
    if (this.#gone === null && this.#start === this.#end) this.#close();
  }

  destroy(): void {
    this.#close();
  }

  /** Waits for a whole head; null when the connection ended before one began. */
  async #readHead(first: boolean): Promise<RequestHead | null> {
    if (!first) {
      const wait = this.overflow ? "reserve" : this.#start < this.#end ? "header" : "idle";
      this.server.deadline(this, wait);
    }
    let scanned = this.#start;
    for (;;) {
      const end = headEnd(this.#buf, Math.max(this.#start, scanned - 3), this.#end);
      if (end !== -1) {
        const text = latin1(this.#buf.subarray(this.#start, end - 4));
        this.#start = end;
        this.server.deadline(this, null);
        return parseHead(text);
      }
      if (this.#end - this.#start > MAX_HEAD_BYTES) {
        throw new MalformedRequest(431, "Request headers are too large");
      }
      scanned = this.#end;
      const before = this.#end - this.#start;
      if (!(await this.#fill(MAX_HEAD_BYTES + 4))) return null;
      if (before === 0 && this.wait === "idle" && !this.overflow) {
        this.server.deadline(this, "header");
      }
    }
  }

  /**
   * Reads more into the buffer (growing it up to `cap` bytes when full); the read in flight is
   * shared, so watching for the client's close and reading the next request use one read.
   */
  #fill(cap: number): Promise<boolean> {
    if (this.#reading !== null) return this.#reading;
    if (this.#ended) return Promise.resolve(false);
    if (this.#start === this.#end) {
      this.#start = this.#end = 0;
    } else if (this.#end === this.#buf.length) {
      const live = this.#end - this.#start;
      const size = live < this.#buf.length
        ? this.#buf.length
        : Math.max(this.#buf.length, Math.min(cap, live * 2));
      const buf = size === this.#buf.length ? this.#buf : new Uint8Array(size);
      buf.set(this.#buf.subarray(this.#start, this.#end));
      this.#buf = buf;
      this.#start = 0;
      this.#end = live;
      if (live === buf.length) return Promise.resolve(false);
    }
    return this.#read(this.#buf.subarray(this.#end), (n) => this.#end += n);
  }

  /**
   * One read into `into` as the connection's read in flight: `got` is told how many bytes
   * came; false at EOF or a reset, and the connection is closed.
   */
  #read(into: Uint8Array, got: (n: number) => void): Promise<boolean> {
    return this.#reading = this.conn.read(into).then((n) => {
      this.#reading = null;
      if (n === null) return this.#endedByClient();
      got(n);
      return true;
    }, () => {
      this.#reading = null;
      return this.#endedByClient();
    });
  }

  /** The client closed or reset the connection: nothing more can go either way. */
  #endedByClient(): false {
    this.#close();
    return false;
  }

  /** Keeps a read open while the answer is prepared: the client's close aborts the request. */
  #watch(): void {
    if (this.#reading !== null || this.#ended || this.#end - this.#start >= MAX_PIPELINED) return;
    this.#fill(MAX_PIPELINED).then((more) => {
      if (more && this.#gone !== null) this.#watch();
    });
  }

  /** Hands one request to the handler and writes its answer; false when the connection ends. */
  async #handle(head: RequestHead): Promise<boolean> {
    const refused = this.overflow ? this.server.refuses(head) : null;
    if (refused !== null) {
      await this.#writeError(refused);
      return false;
    }
    if (!head.target.startsWith("/")) {
      const target = head.target.slice(0, 100);
      await this.#writeError(malformedHttp(400, `Unsupported request target '${target}'`));
      return false;
    }
    const gone = this.#gone = new AbortController();
    this.#answeredBySelf = false;
    let answer: (() => Answer | Promise<Answer>) | null;
    try {
      answer = this.#handlerFor(head, gone.signal);
    } catch (err) {
      this.#gone = null;
      await this.#writeError(malformedHttp(400, `Malformed request: ${messageOf(err)}`));
      return false;
    }
    if (this.#bodyDone) this.#watch();
    this.server.requestStarted();
    const failed = (err: unknown) => {
      this.server.options.log.error("response_failed", {
        error: err instanceof Error ? err.stack : String(err),
      });
      return toApiError(err, "unknown");
    };
    try {
      let response: Answer;
      try {
        // The request is the handler's once asked (see #handlerFor): dropped here too.
        const pending = answer();
        answer = null;
        response = await pending;
      } catch (err) {
        response = failed(err).toResponse();
      }
      if (this.#answeredBySelf || this.#ended) {
        await cancelAnswer(response, new ClientGoneError());
        return false;
      }
      try {
        return await this.#send(head, response);
      } catch (err) {
        // A Response whose complete body broke before a byte of it was written (a stream's
        // breaks are handled as it goes).
        await this.#writeError(failed(err));
        return false;
      }
    } finally {
      this.#gone = null;
      this.server.requestEnded();
    }
  }

  /**
   * The call that answers `head`. The request, with a body that came with the head, is built
   * here rather than in `#handle`: that frame lives as long as an answer streams, and its locals
   * would keep the prompt that long.
   * @throws on a request that cannot be built (a malformed header).
   */
  #handlerFor(head: RequestHead, signal: AbortSignal): () => Answer | Promise<Answer> {
    const direct = this.server.handler.direct;
    const bodied = head.body !== 0 && head.method !== "GET" && head.method !== "HEAD";
    const body = bodied ? this.#body(head) : null;
    const parts = direct === undefined ? null : targetParts(head.target);
    let answer: () => Answer | Promise<Answer>;
    if (direct !== undefined && parts !== null && direct.takes(head.method, parts.pathname)) {
      const request: DirectRequest = {
        method: head.method,
        pathname: parts.pathname,
        search: parts.search,
        headers: new Headers(head.headers),
        signal,
        body,
      };
      answer = () => direct.answer(request);
    } else {
      const request = new Request(this.server.origin + head.target, {
        method: head.method,
        headers: head.headers,
        signal,
        body,
        // @ts-expect-error: Deno's RequestInit takes `duplex` for stream bodies; lib.dom lacks it.
        duplex: "half",
      });
      if (body instanceof Uint8Array) arrivedWithHead(request, body);
      answer = () => this.server.handler.fetch(request);
    }
    // A body not handed on is not read: the connection cannot carry another request.
    if (!bodied) this.#bodyDone = head.body === 0;
    return answer;
  }

  /**
   * The request body, read from the connection only when the handler asks for it (an API key
   * is checked first): what already arrived with the head is handed over at once.
   */
  #body(head: RequestHead): Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array> {
    const length = head.body;
    if (length !== "chunked" && this.#end - this.#start >= length && !head.expectContinue) {
      const bytes = this.#buf.slice(this.#start, this.#start + length);
      this.#start += length;
      this.#bodyDone = true;
      return bytes;
    }
    this.#bodyDone = false;
    this.server.deadline(this, "body");
    let left = length === "chunked" ? Infinity : length;
    const chunked = length === "chunked" ? new ChunkedDecoder() : null;
    let askContinue = head.expectContinue;
    let readSize = FIRST_BUFFER;
    const finished = () => {
      this.#bodyDone = true;
      this.server.deadline(this, null);
      this.#watch();
    };
    const incomplete = () =>
      this.#answeredBySelf ? new Error("it took longer than body_timeout") : new ClientGoneError();
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        if (askContinue) {
          askContinue = false;
          if (!(await this.#write(CONTINUE))) return controller.error(new ClientGoneError());
        }
        try {
          for (;;) {
            if (this.#start < this.#end) {
              if (chunked !== null) {
                const { used, data } = chunked.feed(this.#buf, this.#start, this.#end);
                this.#start += used;
                for (const piece of data) controller.enqueue(piece.slice());
                if (chunked.done) {
                  finished();
                  return controller.close();
                }
                if (data.length > 0) return;
              } else {
                const take = Math.min(left, this.#end - this.#start);
                controller.enqueue(this.#buf.slice(this.#start, this.#start + take));
                this.#start += take;
                left -= take;
                if (left === 0) {
                  finished();
                  controller.close();
                }
                return;
              }
            }
            if (chunked === null && !this.#ended && this.#reading === null) {
              // A large body is read beside the head buffer, not through it: each read into a
              // fresh buffer that is handed on as it is. Reads copied out of one reused buffer
              // left the allocator holding ~300 MB after 40 uploads of 60 MB (V8 had freed
              // all but 2 MB). The size starts at 4 KB and doubles while reads fill it: a
              // client that stalls holds 4 KB, not 64 (3,000 of them held 250 MB). Still the
              // one read in flight, which a linger after an early answer shares.
              const into = new Uint8Array(Math.min(readSize, left));
              let n = 0;
              if (!(await this.#read(into, (got) => n = got))) {
                return controller.error(incomplete());
              }
              controller.enqueue(n === into.length ? into : into.subarray(0, n));
              left -= n;
              if (n === into.length && readSize < BODY_READ) readSize *= 2;
              if (left === 0) {
                finished();
                controller.close();
              }
              return;
            }
            if (!(await this.#fill(BODY_READ))) return controller.error(incomplete());
          }
        } catch (err) {
          controller.error(err);
        }
      },
    }, { highWaterMark: 0 });
  }

  /**
   * Writes `response`. Event streams go out chunk by chunk as they come, read from the relay's
   * ChunkSource directly when it made the response; anything else is complete and goes out in
   * one write with its length. True when the connection can take another request.
   */
  async #send(head: RequestHead, response: Answer): Promise<boolean> {
    // An answer given before the body arrived: no 408 from the body's deadline on top of it.
    this.server.deadline(this, null);
    let text = statusLine(response.status);
    let eventStream = false;
    let dated = false;
    const add = (value: string, name: string) => {
      if (
        name === "content-length" || name === "transfer-encoding" || name === "connection" ||
        name === "keep-alive"
      ) return;
      if (name === "content-type") {
        eventStream = isEventStreamType(value);
      } else if (name === "date") dated = true;
      text += `${name}: ${value}\r\n`;
    };
    if (response instanceof Response) response.headers.forEach(add);
    else for (const [name, value] of response.headers) add(value, name);
    // A backend's answer carries its own.
    if (!dated) text += `date: ${httpDate()}\r\n`;
    const status = response.status;
    const bodiless = head.method === "HEAD" || status === 204 || status === 304;
    if (response instanceof CompleteAnswer) {
      return await this.#sendWhole(head, text, status, response.bytes);
    }
    if (!eventStream || bodiless) {
      if (eventStream) await cancelAnswer(response);
      const bytes = eventStream ? EMPTY : await answerBytes(response);
      return await this.#sendWhole(head, text, status, bytes);
    }
    // HTTP/1.0 has no chunked coding: its stream ends when the connection does.
    const keep = head.http11 && this.#keepAlive(head);
    text += head.http11 ? "transfer-encoding: chunked\r\n" : "";
    text += keep ? "\r\n" : "connection: close\r\n\r\n";
    const source = response instanceof StreamAnswer
      ? response.source
      : readerSource(response.body!);
    const leave = () => source.cancel(new ClientGoneError()).catch(() => {});
    this.#onEnd = leave;
    try {
      // A backend's first chunk mostly comes in the same read as its status line: when it is
      // at hand, the head and it go out in one write.
      let unsent: string | null = text;
      const first = source.read();
      const early = await atHand(first, AT_HAND_TURNS);
      if (early === LATE) {
        if (!(await this.#write(withHead(text, EMPTY)))) {
          leave();
          return false;
        }
        unsent = null;
      }
      for (
        let chunk = early === LATE ? await first : early;
        chunk !== null;
        chunk = await source.read()
      ) {
        if (this.#ended) return false;
        if (chunk.byteLength === 0) continue;
        const framed = head.http11 ? chunkFrame(chunk) : chunk;
        if (!(await this.#write(unsent === null ? framed : withHead(unsent, framed)))) return false;
        unsent = null;
      }
      const end = head.http11 ? LAST_CHUNK : EMPTY;
      if (!(await this.#write(unsent === null ? end : withHead(unsent, end)))) return false;
    } catch {
      // The body broke, or was cancelled because the client left: nothing more to send, and
      // an abrupt close tells the client the stream did not end well.
      this.#close();
      return false;
    } finally {
      this.#onEnd = null;
    }
    if (!keep) this.#linger();
    return keep;
  }

  /**
   * Writes a complete answer after `text` (its status line and headers), in one write with its
   * length (a HEAD answer's length, without its bytes).
   */
  async #sendWhole(
    head: RequestHead,
    text: string,
    status: number,
    bytes: Uint8Array,
  ): Promise<boolean> {
    if (this.#ended || this.#answeredBySelf) return false;
    // Unread body left on the socket (an answer given before it arrived): no reading on.
    const keep = this.#keepAlive(head);
    const noBody = status === 204 || status === 304;
    if (!noBody) text += `content-length: ${bytes.byteLength}\r\n`;
    text += keep
      ? (head.http11 ? "\r\n" : "connection: keep-alive\r\n\r\n")
      : "connection: close\r\n\r\n";
    const sent = noBody || head.method === "HEAD" ? EMPTY : bytes;
    if (!(await this.#write(withHead(text, sent)))) return false;
    if (!keep) this.#linger();
    return keep;
  }

  #keepAlive(head: RequestHead): boolean {
    return head.keepAlive && this.#bodyDone && !this.server.closing && !this.#ended;
  }

  /** Writes all of `bytes`; false when the connection broke. */
  async #write(bytes: Uint8Array): Promise<boolean> {
    try {
      for (let at = 0; at < bytes.byteLength;) {
        at += await this.conn.write(at === 0 ? bytes : bytes.subarray(at));
      }
      return true;
    } catch {
      this.#endedByClient();
      return false;
    }
  }

  /** An error answer for a request no handler sees; the connection closes after it. */
  async #writeError(error: ApiError, linger = true): Promise<void> {
    const body = JSON.stringify(error.toJSON());
    let text = statusLine(error.status);
    for (const [name, value] of Object.entries(error.headers)) text += `${name}: ${value}\r\n`;
    text += `content-type: application/json\r\ndate: ${httpDate()}\r\n` +
      `content-length: ${encoder.encode(body).byteLength}\r\nconnection: close\r\n\r\n`;
    await this.#write(withHead(text, encoder.encode(body)));
    if (linger) this.#linger();
    else this.#close();
  }

  /**
   * Closes after an answer: our side first (FIN), then the rest of what the client sends is
   * read and dropped for a moment, so that closing with unread bytes does not reset the
   * connection before the client read its answer.
   */
  #linger(): void {
    if (this.#closed) return;
    this.server.deadline(this, null);
    try {
      this.conn.closeWrite();
    } catch {
      return this.#close();
    }
    this.#lingering = true;
    const cut = setTimeout(() => this.#close(), LINGER_MS);
    const drain = async () => {
      do this.#start = this.#end; while (!this.#closed && (await this.#fill(FIRST_BUFFER)));
      clearTimeout(cut);
      this.#close();
    };
    drain();
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ended = true;
    this.server.closed(this);
    this.#gone?.abort(new ClientGoneError());
    this.#onEnd?.();
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}

const LATE = Symbol("late");

/** What `promise` gives if it settles within `turns` microtask turns, else LATE (still pending). */
function atHand<T>(promise: Promise<T>, turns: number): Promise<T | typeof LATE> {
  let late: Promise<typeof LATE> = Promise.resolve(LATE);
  for (let i = 1; i < turns; i++) late = late.then(same);
  return Promise.race([promise, late]);
}

const same = <T>(value: T) => value;

let dateText = "";
let dateSecond = 0;

/** The Date header's value, made once a second. */
function httpDate(): string {
  const second = Math.floor(Date.now() / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateText = new Date(second * 1000).toUTCString();
  }
  return dateText;
}
