/**
 * @module
 * HTTP/1.1 request framing (RFC 9112), as pure functions over bytes: where a request head
 * ends, what it says, and a decoder for chunked bodies. lib/http_server.ts does the I/O;
 * lib/chunk_frame.ts frames the chunks of the answers it streams.
 *
 * Strict where leniency is how requests get smuggled past a proxy: a header name with space
 * before its colon, folded lines, a bare CR or LF, Content-Length beside Transfer-Encoding,
 * two different lengths, or a coding other than chunked are refused, not guessed at.
 */

/** A request head as the server acts on it. */
export interface RequestHead {
  method: string;
  /** The request target as sent (origin-form for anything this proxy serves). */
  target: string;
  /** HTTP/1.1 (true) or HTTP/1.0. */
  http11: boolean;
  /** Name/value pairs in the order sent, names as sent, values without surrounding space. */
  headers: [string, string][];
  /** Body bytes by Content-Length, or "chunked"; 0 when there is no body. */
  body: number | "chunked";
  /** The client will send the body after a `100 Continue`. */
  expectContinue: boolean;
  /** The client wants the connection kept after the answer. */
  keepAlive: boolean;
}

/** A request the server cannot read; answered with `status` and closed. */
export class MalformedRequest extends Error {
  constructor(readonly status: 400 | 431 | 501, message: string) {
    super(message);
    this.name = "MalformedRequest";
  }
}

const CR = 13;
const LF = 10;

/** The index just past the blank line that ends a head in `buf[from, to)`, or -1. */
export function headEnd(buf: Uint8Array, from: number, to: number): number {
  for (let i = buf.indexOf(LF, from); i !== -1 && i < to; i = buf.indexOf(LF, i + 1)) {
    if (i + 2 < to && buf[i + 1] === CR && buf[i + 2] === LF && buf[i - 1] === CR) return i + 3;
  }
  return -1;
}

/** Bytes as a string of the same length, one char per byte, as header values are. */
export function latin1(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    out += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192) as unknown as number[]);
  }
  return out;
}

// deno-lint-ignore no-control-regex -- a target holds no controls or spaces (RFC 9112 §3.2)
const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([^\x00-\x20\x7f]+) HTTP\/1\.([01])$/;

/** 1 for each ASCII char a token may hold (RFC 9110 §5.6.2). */
const TOKEN_CHARS = new Uint8Array(128);
for (const ch of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  TOKEN_CHARS[ch.charCodeAt(0)] = 1;
}

// Loops, not regex tests, for the two checks every header line gets: per request, with their
// code cold, each test of a regex cost about a microsecond.

/** Whether `name` is a field name (a token, RFC 9110 §5.1). */
export function isFieldName(name: string): boolean {
  if (name.length === 0) return false;
  for (let i = 0; i < name.length; i++) {
    const ch = name.charCodeAt(i);
    if (ch >= 128 || TOKEN_CHARS[ch] === 0) return false;
  }
  return true;
}

/** Whether a field value holds a control character (tab is allowed). */
export function hasControl(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const ch = value.charCodeAt(i);
    if ((ch < 0x20 && ch !== 0x09) || ch === 0x7f) return true;
  }
  return false;
}

/**
 * Whether a connection stays open after this message, from its version and its Connection
 * values joined by commas (lowercase): HTTP/1.1 unless `close`, HTTP/1.0 only with `keep-alive`.
 */
export function keepsAlive(http11: boolean, connection: string): boolean {
  const tokens = connection.split(",").map((token) => token.trim());
  return http11 ? !tokens.includes("close") : tokens.includes("keep-alive");
}

/** `head` and `body` in one buffer, for one write. */
export function withHead(head: string, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(head.length + body.byteLength);
  // Header values are byte strings: one byte per char, which UTF-8 keeps only for ASCII. A
  // loop here, not TextEncoder.encodeInto (an op call) after a regex test for ASCII: per
  // answer, with that code cold, those took ~2 µs a head.
  for (let i = 0; i < head.length; i++) out[i] = head.charCodeAt(i);
  out.set(body, head.length);
  return out;
}

/**
 * A target taken as it is: letters, digits, `_`, `-` and `/` in the path, and a plain query. Any
 * other is parsed as a URL, as a web Request would (dot segments, a bare `?`, `#`).
 */
const PLAIN_TARGET = /^(\/[\w\-/]*)(\?[\w\-.~=&%+,:]+)?$/;

/** An origin-form target's path and query (with its `?`, or empty), as a URL gives them. */
export function targetParts(target: string): { pathname: string; search: string } {
  const plain = PLAIN_TARGET.exec(target);
  if (plain !== null) return { pathname: plain[1], search: plain[2] ?? "" };
  const url = new URL("http://proxy" + target);
  return { pathname: url.pathname, search: url.search };
}

/** Reads a head: the bytes from the request line up to and without the blank line. */
export function parseHead(text: string): RequestHead {
  const lines = text.split("\r\n");
  // A blank line before the request line is allowed (RFC 9112 §2.2): a client's stray CRLF.
  while (lines.length > 1 && lines[0] === "") lines.shift();
  const line = REQUEST_LINE.exec(lines[0]);
  if (line === null) {
    throw new MalformedRequest(400, `Malformed request line '${lines[0].slice(0, 100)}'`);
  }
  const http11 = line[3] === "1";
  const headers: [string, string][] = [];
  let length: string | null = null;
  let transferEncoding: string | null = null;
  let connection = "";
  let expect: string | null = null;
  for (let i = 1; i < lines.length; i++) {
    const field = lines[i];
    const colon = field.indexOf(":");
    const name = colon > 0 ? field.slice(0, colon) : "";
    if (!isFieldName(name)) {
      throw new MalformedRequest(400, `Malformed header line '${field.slice(0, 100)}'`);
    }
    const value = field.slice(colon + 1).trim();
    if (hasControl(value)) {
      throw new MalformedRequest(400, `Header '${name}' holds a control character`);
    }
    headers.push([name, value]);
    switch (name.length) {
      case 6:
        if (name.toLowerCase() === "expect") expect = value.toLowerCase();
        break;
      case 10:
        if (name.toLowerCase() === "connection") connection += `,${value.toLowerCase()}`;
        break;
      case 14:
        if (name.toLowerCase() !== "content-length") break;
        if (length !== null && length !== value) {
          throw new MalformedRequest(400, "Two different Content-Length headers");
        }
        length = value;
        break;
      case 17:
        if (name.toLowerCase() !== "transfer-encoding") break;
        transferEncoding = transferEncoding === null ? value : `${transferEncoding}, ${value}`;
        break;
    }
  }
  let body: number | "chunked" = 0;
  if (transferEncoding !== null) {
    if (length !== null) {
      throw new MalformedRequest(400, "Both Content-Length and Transfer-Encoding are set");
    }
    if (transferEncoding.toLowerCase() !== "chunked") {
      throw new MalformedRequest(501, `Transfer-Encoding '${transferEncoding}' is not supported`);
    }
    body = "chunked";
  } else if (length !== null) {
    if (!/^\d{1,15}$/.test(length)) {
      throw new MalformedRequest(400, `Malformed Content-Length '${length.slice(0, 40)}'`);
    }
    body = Number(length);
  }
  return {
    method: line[1],
    target: line[2],
    http11,
    headers,
    body,
    expectContinue: http11 && expect === "100-continue",
    keepAlive: keepsAlive(http11, connection),
  };
}

/** Where a chunked body's decoder is: RFC 9112 §7.1. */
type ChunkedPhase = "size" | "data" | "data-end" | "trailer" | "done";

/** The longest chunk-size line (with extensions) or trailer line taken. */
const MAX_CHUNKED_LINE = 4096;

/**
 * Decodes a chunked body from bytes as they arrive. `feed` takes what is buffered and says how
 * much of it was used: data bytes come out as views of the input, so copy before reusing it.
 */
export class ChunkedDecoder {
  #phase: ChunkedPhase = "size";
  /** Data bytes left in the current chunk. */
  #left = 0;

  get done(): boolean {
    return this.#phase === "done";
  }

  /**
   * Consumes from `buf[from, to)`; returns how many bytes it used and the data found. It stops
   * at the end of the body: bytes past it belong to the next request.
   * @throws {MalformedRequest} on a bad size line, missing CRLF, or an over-long line.
   */
  feed(buf: Uint8Array, from: number, to: number): { used: number; data: Uint8Array[] } {
    const data: Uint8Array[] = [];
    let at = from;
    while (at < to && this.#phase !== "done") {
      if (this.#phase === "data") {
        const take = Math.min(this.#left, to - at);
        data.push(buf.subarray(at, at + take));
        at += take;
        this.#left -= take;
        if (this.#left === 0) this.#phase = "data-end";
        continue;
      }
      const eol = buf.indexOf(LF, at);
      if (eol === -1 || eol >= to) {
        if (to - at > MAX_CHUNKED_LINE) {
          throw new MalformedRequest(400, "A chunked body line is too long");
        }
        break;
      }
      if (eol === at || buf[eol - 1] !== CR) {
        throw new MalformedRequest(400, "A chunked body line does not end in CRLF");
      }
      // The usual lines, a bare CRLF after data and a size alone, are read off the bytes.
      if (this.#phase === "data-end" && eol === at + 1) {
        at = eol + 1;
        this.#phase = "size";
        continue;
      }
      if (this.#phase === "size") {
        const size = hexAt(buf, at, eol - 1);
        if (size >= 0) {
          at = eol + 1;
          this.#left = size;
          this.#phase = size === 0 ? "trailer" : "data";
          continue;
        }
      }
      const line = latin1(buf.subarray(at, eol - 1));
      at = eol + 1;
      if (this.#phase === "data-end") {
        if (line !== "") throw new MalformedRequest(400, "A chunk is longer than its size");
        this.#phase = "size";
      } else if (this.#phase === "size") {
        const size = /^([0-9a-fA-F]{1,12})[ \t]*(;.*)?$/.exec(line);
        if (size === null) {
          throw new MalformedRequest(400, `Malformed chunk size '${line.slice(0, 40)}'`);
        }
        this.#left = parseInt(size[1], 16);
        this.#phase = this.#left === 0 ? "trailer" : "data";
      } else if (line === "") {
        this.#phase = "done";
      }
    }
    return { used: at - from, data };
  }
}

/** The number `buf[from, to)` writes in 1 to 12 hex digits and nothing else, or -1. */
function hexAt(buf: Uint8Array, from: number, to: number): number {
  if (to <= from || to - from > 12) return -1;
  let value = 0;
  for (let i = from; i < to; i++) {
    const c = buf[i];
    const digit = c >= 48 && c <= 57
      ? c - 48
      : c >= 97 && c <= 102
      ? c - 87
      : c >= 65 && c <= 70
      ? c - 55
      : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

/** Reason phrases for the status lines this server writes. */
const REASONS: Record<number, string> = {
  100: "Continue",
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
  301: "Moved Permanently",
  302: "Found",
  304: "Not Modified",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  409: "Conflict",
  410: "Gone",
  413: "Content Too Large",
  415: "Unsupported Media Type",
  422: "Unprocessable Content",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  499: "Client Closed Request",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

export function statusLine(status: number): string {
  return `HTTP/1.1 ${status} ${REASONS[status] ?? "Status"}\r\n`;
}
