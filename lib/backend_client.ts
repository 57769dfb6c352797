/**
 * @module
 * The proxy's HTTP/1.1 client for its model backends: one request at a time per connection,
 * connections kept alive and reused per origin, bodies handed over as bytes or read chunk by
 * chunk. Framing comes from lib/http1.ts.
 *
 * Not fetch, because of what it costs per request: on the bench's instant backend, forwarding
 * with fetch took 0.63-0.66 ms of CPU per request against 0.40-0.43 ms with this client
 * (2 cores, c=1). fetch builds a Request, a Headers, an AbortSignal follower and a body stream
 * for the call, and a Response, a Headers and a stream for the answer; the proxy then reads
 * that stream back to bytes. Here a request is one write and an answer one or two reads.
 * fetch stays for everything else the proxy asks (health checks, Docker, peers, slots).
 *
 * What it does not do, as llama-server does not need it: compression (it asks for none),
 * proxies from the environment, HTTP/2, redirects (relayed as they are, as fetch's
 * `redirect: "manual"` did).
 *
 * Over 350 lines on purpose: the pool, the exchange and the body reader share one connection's
 * state and its failure modes.
 */
import { readAll } from "./chunk_source.ts";
import { copyForFraming } from "./chunk_frame.ts";
import {
  ChunkedDecoder,
  hasControl,
  headEnd,
  isFieldName,
  keepsAlive,
  latin1,
  withHead,
} from "./http1.ts";
import { type HeaderList, isHopByHop } from "./http_headers.ts";

export interface BackendRequest {
  method: string;
  url: string;
  /** Without host, content-length and hop-by-hop headers: the client sets those. */
  headers: HeaderList;
  body: Uint8Array | null;
  /** Aborting closes the connection: the backend sees the client leave and stops. */
  signal: AbortSignal;
}

export interface BackendResponse {
  status: number;
  statusText: string;
  /** As the backend sent them, names in lowercase, without those of the hop (framing, …). */
  headers: HeaderList;
  body: BackendBody;
}

/** The backend closed or reset the connection, or sent something that is not HTTP/1.x. */
export class BackendProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BackendProtocolError";
  }
}

/** How long a connection may sit unused before it is closed rather than reused. */
const IDLE_MS = 4_000;
/** Idle connections kept per origin; more are closed as they come back. */
const MAX_IDLE_PER_ORIGIN = 32;
/** The read buffer a connection starts with; a bigger head or chunk grows it. */
const FIRST_BUFFER = 4096;
const MAX_BUFFER = 65536;
/** A response head larger than this is not HTTP we want. */
const MAX_HEAD = 65536;
/** A kept connection that fails this soon after the request was written had gone stale. */
const STALE_WITHIN_MS = 250;
/** Bodies up to this size go out in the same write as the head. */
const COALESCE_BODY = 65536;

interface Origin {
  key: string;
  hostname: string;
  port: number;
  tls: boolean;
  /** The Host header. */
  host: string;
}

/** A connection to one origin, with its read buffer. */
class Connection {
  buf = new Uint8Array(FIRST_BUFFER);
  start = 0;
  end = 0;
  idleSince = 0;
  closed = false;

  constructor(readonly origin: Origin, readonly conn: Deno.Conn) {}

  /** The last read filled all the room it had: the backend writes more at once. */
  #filled = false;

  /** Reads more into the buffer (growing or compacting it); false at EOF. */
  async fill(): Promise<boolean> {
    return this.took(await this.conn.read(this.room()));
  }

  /**
   * The free end of the buffer, grown or compacted first, for the next read. With `took`,
   * `fill` in two steps, for a caller that reads the socket itself (BackendBody): no async
   * frame of `fill` per chunk on the stream path.
   */
  room(): Uint8Array {
    if (this.start === this.end) {
      this.start = this.end = 0;
      if (this.#filled && this.buf.length < MAX_BUFFER) {
        this.buf = new Uint8Array(this.buf.length * 2);
      }
    }
    if (this.end === this.buf.length) {
      if (this.start > 0) {
        this.buf.copyWithin(0, this.start, this.end);
        this.end -= this.start;
        this.start = 0;
      } else {
        const bigger = new Uint8Array(this.buf.length * 2);
        bigger.set(this.buf);
        this.buf = bigger;
      }
    }
    return this.buf.subarray(this.end);
  }

  /** Counts a read into `room()`'s bytes in; false at EOF. */
  took(n: number | null): boolean {
    if (n === null) return false;
    this.#filled = this.end + n === this.buf.length;
    this.end += n;
    return true;
  }

  async write(bytes: Uint8Array): Promise<void> {
    for (let at = 0; at < bytes.byteLength;) {
      at += await this.conn.write(at === 0 ? bytes : bytes.subarray(at));
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.conn.close();
    } catch {
      // already closed by a failed read or write
    }
  }
}

/** Keep-alive connections to the backends, and the requests sent on them. */
export class BackendClient {
  readonly #idle = new Map<string, Connection[]>();
  readonly #origins = new Map<string, Origin>();
  #sweeper: ReturnType<typeof setInterval> | null = null;
  #closed = false;

  /**
   * Sends `req` and resolves with the answer's head; its body is read from `body`.
   * @throws when no answer came (refused, reset, closed): nothing of it reached anyone.
   * @throws the signal's reason when it aborted first.
   */
  async send(req: BackendRequest): Promise<BackendResponse> {
    const path = req.url.indexOf("/", req.url.indexOf("//") + 2);
    const origin = this.#origin(req.url, path === -1 ? req.url.length : path);
    const head = requestHead(req, origin, path === -1 ? "/" : req.url.slice(path));
    for (let attempt = 0;; attempt++) {
      req.signal.throwIfAborted();
      // A retry takes a new connection: the others kept may be as stale as the one that failed.
      const reused = attempt === 0 ? this.#take(origin) : null;
      const conn = reused ?? await this.#connect(origin, req.signal);
      const onAbort = () => conn.close();
      req.signal.addEventListener("abort", onAbort, { once: true });
      let sentAt = 0;
      try {
        // An abort while connecting (connectTls takes no signal) found no listener yet.
        req.signal.throwIfAborted();
        sentAt = performance.now();
        await sendRequest(conn, head, req.body);
        const response = await readResponseHead(conn, req.method);
        const body = new BackendBody(conn, response.framing, req.signal, onAbort, this);
        return {
          status: response.status,
          statusText: response.statusText,
          headers: response.headers,
          body,
        };
      } catch (err) {
        req.signal.removeEventListener("abort", onAbort);
        conn.close();
        if (req.signal.aborted) throw req.signal.reason;
        // A kept connection the backend closed meanwhile (its keep-alive timeout, a new
        // container on the port) fails at once, before any answer: that request never ran
        // there. One that fails later may have (a backend that died mid-answer): that is the
        // dispatcher's to retry or not, as for any unreachable backend.
        const stale = reused !== null && err instanceof StaleConnection &&
          performance.now() - sentAt < STALE_WITHIN_MS;
        if (stale) {
          this.#dropIdle(origin);
          continue;
        }
        throw err instanceof StaleConnection ? err.cause : err;
      }
    }
  }

  /** Closes every idle connection; connections in use close when their answers end. */
  close(): void {
    this.#closed = true;
    if (this.#sweeper !== null) clearInterval(this.#sweeper);
    this.#sweeper = null;
    for (const list of this.#idle.values()) for (const conn of list) conn.close();
    this.#idle.clear();
  }

  /** A connection whose answer was read to its end, for the next request. */
  release(conn: Connection): void {
    if (this.#closed || conn.closed || conn.start !== conn.end) return conn.close();
    const list = this.#idle.get(conn.origin.key) ?? [];
    if (list.length >= MAX_IDLE_PER_ORIGIN) return conn.close();
    conn.idleSince = performance.now();
    conn.start = conn.end = 0;
    list.push(conn);
    this.#idle.set(conn.origin.key, list);
    this.#sweeper ??= this.#startSweeper();
  }

  /** Closes `origin`'s idle connections. */
  #dropIdle(origin: Origin): void {
    for (const conn of this.#idle.get(origin.key) ?? []) conn.close();
    this.#idle.delete(origin.key);
  }

  #take(origin: Origin): Connection | null {
    const list = this.#idle.get(origin.key);
    const now = performance.now();
    while (list !== undefined && list.length > 0) {
      const conn = list.pop()!;
      if (usable(conn, now)) return conn;
    }
    return null;
  }

  /** Closes connections idle too long, so a stopped backend's sockets do not linger. */
  #startSweeper(): ReturnType<typeof setInterval> {
    const timer = setInterval(() => {
      const now = performance.now();
      let left = 0;
      for (const [key, list] of this.#idle) {
        const fresh = list.filter((conn) => usable(conn, now));
        if (fresh.length === 0) this.#idle.delete(key);
        else this.#idle.set(key, fresh);
        left += fresh.length;
      }
      if (left === 0) {
        clearInterval(timer);
        this.#sweeper = null;
      }
    }, IDLE_MS);
    Deno.unrefTimer(timer);
    return timer;
  }

  async #connect(origin: Origin, signal: AbortSignal): Promise<Connection> {
    const options = { hostname: origin.hostname, port: origin.port, signal };
    const conn = origin.tls ? await Deno.connectTls(options) : await Deno.connect(options);
    if (!origin.tls) (conn as Deno.TcpConn).setNoDelay(true);
    return new Connection(origin, conn);
  }

  /** The origin `url` names before `pathAt`, parsed once per origin. */
  #origin(url: string, pathAt: number): Origin {
    const key = url.slice(0, pathAt);
    let origin = this.#origins.get(key);
    if (origin === undefined) {
      const parsed = new URL(url);
      if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
        throw new TypeError(`Unsupported backend URL scheme '${parsed.protocol}'`);
      }
      const tls = parsed.protocol === "https:";
      origin = {
        key,
        // An IPv6 literal comes bracketed in a URL, not in a socket address.
        hostname: parsed.hostname.replace(/^\[(.*)\]$/, "$1"),
        port: parsed.port === "" ? (tls ? 443 : 80) : Number(parsed.port),
        tls,
        host: parsed.host,
      };
      this.#origins.set(key, origin);
    }
    return origin;
  }
}

/** Whether an idle connection may still be used at `now`; one idle too long is closed. */
function usable(conn: Connection, now: number): boolean {
  if (now - conn.idleSince < IDLE_MS) return true;
  conn.close();
  return false;
}

/** The connection failed before the answer started; the cause says how. */
class StaleConnection extends Error {
  constructor(cause: unknown) {
    super("the connection closed before an answer", { cause });
  }
}

/** The request line and headers, as bytes (header values are bytes, one per char). */
function requestHead(req: BackendRequest, origin: Origin, target: string): string {
  let text = `${req.method} ${target} HTTP/1.1\r\nhost: ${origin.host}\r\n`;
  for (const [name, value] of req.headers) text += `${name}: ${value}\r\n`;
  if (req.body !== null) text += `content-length: ${req.body.byteLength}\r\n`;
  return text + "\r\n";
}

async function sendRequest(conn: Connection, head: string, body: Uint8Array | null) {
  const small = body === null || body.byteLength <= COALESCE_BODY;
  try {
    await conn.write(withHead(head, small && body !== null ? body : NO_BYTES));
    if (!small) await conn.write(body!);
  } catch (err) {
    throw new StaleConnection(err);
  }
}

/** How an answer's body ends. */
type Framing =
  | { kind: "none"; keep: boolean }
  | { kind: "length"; length: number; keep: boolean }
  | { kind: "chunked"; keep: boolean }
  | { kind: "close" };

interface ResponseHead {
  status: number;
  statusText: string;
  headers: HeaderList;
  framing: Framing;
}

const isDigit = (ch: string) => ch >= "0" && ch <= "9";

/**
 * `HTTP/1.x NNN reason`: its minor version, status and reason, or null when it is not one (a
 * control character in the reason too: a Response could not carry it). Not a regex: per
 * request, with its code cold, a regex's exec took ~2 µs.
 */
function statusLine(text: string): { http11: boolean; status: number; reason: string } | null {
  const minor = text[7];
  const ok = text.startsWith("HTTP/1.") && (minor === "0" || minor === "1") && text[8] === " " &&
    isDigit(text[9]) && isDigit(text[10]) && isDigit(text[11]) &&
    (text.length === 12 || (text[12] === " " && !hasControl(text)));
  if (!ok) return null;
  return { http11: minor === "1", status: Number(text.slice(9, 12)), reason: text.slice(13) };
}
const NO_BYTES = new Uint8Array(0);

async function readResponseHead(conn: Connection, method: string): Promise<ResponseHead> {
  for (let first = true;; first = false) {
    let end: number;
    while ((end = headEnd(conn.buf, conn.start, conn.end)) === -1) {
      if (conn.end - conn.start > MAX_HEAD) {
        throw new BackendProtocolError("the answer's head is too large");
      }
      let more: boolean;
      try {
        more = await conn.fill();
      } catch (err) {
        if (first && conn.start === conn.end) throw new StaleConnection(err);
        throw err;
      }
      if (!more) {
        const reason = new BackendProtocolError("the backend closed the connection");
        if (first && conn.start === conn.end) throw new StaleConnection(reason);
        throw reason;
      }
    }
    const lines = latin1(conn.buf.subarray(conn.start, end - 4)).split("\r\n");
    conn.start = end;
    const line = statusLine(lines[0]);
    if (line === null) {
      throw new BackendProtocolError(`not an HTTP/1.x answer: '${lines[0].slice(0, 60)}'`);
    }
    const status = line.status;
    // An interim answer (100 Continue, 103 Early Hints): the real one follows.
    if (status < 200) continue;
    // Beyond what a Response can carry: refused here, where the connection is closed for it.
    if (status > 599) throw new BackendProtocolError(`status ${status} is not HTTP`);
    const http11 = line.http11;
    const headers: HeaderList = [];
    let length = -1;
    let chunked = false;
    let connection = "";
    /** Whether the line before was kept: an obsolete folded line continues it. */
    let kept = false;
    for (let i = 1; i < lines.length; i++) {
      const text = lines[i];
      if (text[0] === " " || text[0] === "\t") {
        // A fold continues a value a Response would have checked: checked here, as nothing
        // builds a Response for a complete answer. One on a header not kept is refused.
        const more = text.trim();
        if (!kept || hasControl(more)) {
          throw new BackendProtocolError(`malformed folded line '${text.slice(0, 60)}'`);
        }
        headers[headers.length - 1][1] += " " + more;
        continue;
      }
      kept = false;
      const colon = text.indexOf(":");
      const name = text.slice(0, Math.max(colon, 0)).toLowerCase();
      const value = text.slice(colon + 1).trim();
      // What a Response would refuse later, when nothing would close the connection.
      if (!isFieldName(name) || hasControl(value)) {
        throw new BackendProtocolError(`malformed header line '${text.slice(0, 60)}'`);
      }
      if (name === "content-length") {
        length = Number(value);
        if (!Number.isSafeInteger(length) || length < 0) {
          throw new BackendProtocolError(`bad content-length '${value.slice(0, 40)}'`);
        }
      } else if (name === "transfer-encoding") {
        chunked = value.toLowerCase().split(",").map((v) => v.trim()).includes("chunked");
      } else if (name === "connection") {
        connection += `,${value.toLowerCase()}`;
      } else if (!isHopByHop(name)) {
        headers.push([name, value]);
        kept = true;
      }
    }
    const keep = keepsAlive(http11, connection);
    const bodiless = method === "HEAD" || status === 204 || status === 304;
    const framing: Framing = bodiless
      ? { kind: "none", keep }
      : chunked
      ? { kind: "chunked", keep }
      : length >= 0
      ? { kind: "length", length, keep }
      : { kind: "close" };
    return { status, statusText: line.reason, headers, framing };
  }
}

/**
 * An answer's body, read once: whole (`bytes`) or chunk by chunk as the backend sent it
 * (`read`). The connection goes back to the pool when the body was read to its end, and is
 * closed when it broke, was cancelled or the request's signal aborted.
 */
export class BackendBody {
  #conn: Connection | null;
  readonly #framing: Framing;
  readonly #signal: AbortSignal;
  readonly #onAbort: () => void;
  readonly #client: BackendClient;
  #left: number;
  readonly #decoder: ChunkedDecoder | null;
  /** What the last read decoded, not handed out yet. */
  #pending: Uint8Array | null = null;

  constructor(
    conn: Connection,
    framing: Framing,
    signal: AbortSignal,
    onAbort: () => void,
    client: BackendClient,
  ) {
    this.#conn = conn;
    this.#framing = framing;
    this.#signal = signal;
    this.#onAbort = onAbort;
    this.#client = client;
    this.#left = framing.kind === "length" ? framing.length : Infinity;
    this.#decoder = framing.kind === "chunked" ? new ChunkedDecoder() : null;
    if (framing.kind === "none" || (framing.kind === "length" && framing.length === 0)) {
      this.#finish(framing.keep);
    }
  }

  /** The whole body. */
  async bytes(): Promise<Uint8Array<ArrayBuffer>> {
    const conn = this.#conn;
    if (conn === null) return new Uint8Array(0);
    if (this.#framing.kind === "length") {
      // One array of the announced size: what came with the head, then reads straight into it.
      const out = this.#guardSync(() => new Uint8Array(this.#left));
      const have = Math.min(this.#left, conn.end - conn.start);
      out.set(conn.buf.subarray(conn.start, conn.start + have));
      conn.start += have;
      for (let at = have; at < out.length;) {
        let n: number | null;
        try {
          n = await conn.conn.read(out.subarray(at));
        } catch (err) {
          throw this.#failed(err);
        }
        if (n === null) throw this.#broken("the backend closed the connection mid-answer");
        at += n;
      }
      this.#left = 0;
      this.#finish(this.#framing.keep);
      return out;
    }
    return await readAll(this);
  }

  /** The next piece of the body as it came, or null at its end. */
  read(): Promise<Uint8Array | null> {
    try {
      const next = this.#next();
      return next instanceof Promise ? next : Promise.resolve(next);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * The next piece when what is buffered holds one (or the end), else the socket's read and a
   * `then` with handlers made once, not an async function: with 1,000 streams open, each
   * stream's suspended read (its frame's registers, its promises) was copied by every young
   * collection.
   */
  #next(): Uint8Array | null | Promise<Uint8Array | null> {
    for (;;) {
      if (this.#pending !== null) {
        const piece = this.#pending;
        this.#pending = null;
        return piece;
      }
      const conn = this.#conn;
      if (conn === null) {
        this.#signal.throwIfAborted();
        return null;
      }
      if (conn.start === conn.end) break;
      if (this.#decoder !== null) {
        let fed: { used: number; data: Uint8Array[] };
        try {
          fed = this.#decoder.feed(conn.buf, conn.start, conn.end);
        } catch (err) {
          this.#finish(false);
          throw new BackendProtocolError(`malformed chunked answer (${(err as Error).message})`);
        }
        conn.start += fed.used;
        // Views of the read buffer, which the next read reuses: a copy goes out, one for
        // all the pieces one read brought (sent together, they go on together), with room
        // for the client's chunk frame.
        if (fed.data.length > 0) this.#pending = copyForFraming(fed.data);
        if (this.#decoder.done) {
          this.#finish(this.#framing.kind === "chunked" && this.#framing.keep);
        }
        if (this.#pending === null && this.#conn !== null) break;
      } else {
        const take = Math.min(this.#left, conn.end - conn.start);
        const piece = conn.buf.slice(conn.start, conn.start + take);
        conn.start += take;
        this.#left -= take;
        if (this.#left === 0) this.#finish(this.#framing.kind === "length" && this.#framing.keep);
        return piece;
      }
    }
    // Only reached with the exchange still on: the loop's breaks are for a connection kept.
    const conn = this.#conn!;
    try {
      return conn.conn.read(conn.room()).then(this.#took, this.#readFailed);
    } catch (err) {
      throw this.#failed(err);
    }
  }

  readonly #took = (n: number | null): Uint8Array | null | Promise<Uint8Array | null> => {
    const conn = this.#conn;
    // Cancelled while the read was in flight: what it brought is dropped, as the exchange is.
    if (conn === null || conn.took(n)) return this.#next();
    if (this.#framing.kind === "close") {
      this.#finish(false);
      return null;
    }
    throw this.#broken("the backend closed the connection mid-answer");
  };

  readonly #readFailed = (err: unknown): never => {
    throw this.#failed(err);
  };

  /** Stops reading: the connection closes, so the backend stops generating. */
  cancel(): Promise<void> {
    this.#finish(false);
    return Promise.resolve();
  }

  /** A read failed: the connection closes; the abort's reason when that was the cause. */
  #failed(err: unknown): unknown {
    this.#finish(false);
    return this.#signal.aborted ? this.#signal.reason : err;
  }

  /** `work`, closing the connection if it throws. */
  #guardSync<T>(work: () => T): T {
    try {
      return work();
    } catch (err) {
      this.#finish(false);
      throw new BackendProtocolError(`unreadable answer (${(err as Error).message})`);
    }
  }

  #broken(message: string): Error {
    this.#finish(false);
    return this.#signal.aborted ? this.#signal.reason : new BackendProtocolError(message);
  }

  /** The exchange is over: the connection is reused when `reusable`, else closed. */
  #finish(reusable: boolean): void {
    const conn = this.#conn;
    if (conn === null) return;
    this.#conn = null;
    this.#signal.removeEventListener("abort", this.#onAbort);
    if (reusable && !this.#signal.aborted) this.#client.release(conn);
    else conn.close();
  }
}
