/**
 * @module
 * Reading a client's body once, as it arrives, within `max_body_size` and `max_queued_bytes`,
 * and reading the two fields the proxy acts on (`model`, `stream`) from its bytes. The bytes
 * themselves are forwarded untouched; they are the only copy of the body the proxy keeps.
 */
import { bodyTooLarge, incompleteBody, invalidRequest, messageOf } from "./errors.ts";
import { JsonScanError, jsonSkeleton } from "./json_scan.ts";
import { PRIORITIES, type Priority } from "./priority.ts";

/** Where a body's bytes are counted while they are held (max_queued_bytes). */
export interface ByteTally {
  take(bytes: number): void;
  give(bytes: number): void;
  /** Arrived chunks of `bytes` were copied into the body's buffer: they are garbage now. */
  copied(bytes: number): void;
}

const noTally: ByteTally = { take() {}, give() {}, copied() {} };

/**
 * A body as it arrives. Nothing is allocated ahead of what arrived: chunks are kept as they
 * came until a quarter of the declared length is here, then one buffer of exactly that length
 * takes them and the rest is read into it. A client that declares 60 MB and stalls holds what
 * it sent; one that sends 60 MB makes at most 1.25x of it exist at once.
 */
class ArrivingBody {
  #chunks: Uint8Array[] = [];
  #buffer: Uint8Array<ArrayBuffer> | null = null;
  #length = 0;

  constructor(readonly declared: number | null, readonly tally: ByteTally) {}

  get length(): number {
    return this.#length;
  }

  /** @throws what the tally throws (429) when the budget is spent. */
  append(chunk: Uint8Array): void {
    const end = this.#length + chunk.byteLength;
    if (this.#buffer !== null && end <= this.#buffer.byteLength) {
      this.#buffer.set(chunk, this.#length);
      this.tally.copied(chunk.byteLength);
    } else if (this.declared !== null && end <= this.declared && end * 4 >= this.declared) {
      this.tally.take(this.declared);
      const buffer = this.#gather(new Uint8Array(this.declared));
      buffer.set(chunk, this.#length);
      this.tally.give(this.#length);
      this.tally.copied(chunk.byteLength);
      this.#buffer = buffer;
    } else {
      this.tally.take(chunk.byteLength);
      if (this.#buffer !== null) {
        // More than declared (not from lib/http_server.ts, which stops at the length).
        this.#chunks = [this.#buffer.subarray(0, this.#length)];
        this.#buffer = null;
      }
      this.#chunks.push(chunk);
    }
    this.#length = end;
  }

  /** The whole body in one buffer of its length. */
  bytes(): Uint8Array<ArrayBuffer> {
    if (this.#buffer !== null) return this.#buffer.subarray(0, this.#length);
    return this.#gather(new Uint8Array(this.#length));
  }

  /** Moves the chunks kept so far to the start of `buffer`; they are garbage after. */
  #gather(buffer: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
    let offset = 0;
    for (const part of this.#chunks) {
      buffer.set(part, offset);
      offset += part.byteLength;
    }
    this.#chunks = [];
    this.tally.copied(offset);
    return buffer;
  }
}

/**
 * A request's body as the server hands it over: the bytes, when all of them came with the head;
 * a stream, read as it arrives; or none.
 */
export type IncomingBody = Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array> | null;

/** What reading a body needs of a request: a web Request is one. */
export interface BodiedRequest {
  readonly headers: Headers;
  readonly body: IncomingBody;
}

const arrivedWhole = new WeakMap<Request, Uint8Array<ArrayBuffer>>();

/**
 * Says that `request`'s body is `bytes`, all of which arrived with its head: readBody() takes
 * them as they are instead of reading them back through a stream made for them.
 */
export function arrivedWithHead(request: Request, bytes: Uint8Array<ArrayBuffer>): void {
  arrivedWhole.set(request, bytes);
}

function bodyOf(req: BodiedRequest): IncomingBody {
  if (!(req instanceof Request)) return req.body;
  const whole = arrivedWhole.get(req);
  return whole !== undefined && !req.bodyUsed ? whole : req.body;
}

/**
 * Reads the whole body as it arrives, stopping as soon as it passes `limit` bytes, counting
 * what it holds in `tally`.
 * @throws {ApiError} 413 when the body is larger than `limit`; 400 `incomplete_body` when the
 * connection broke or timed out first; whatever `tally` throws (429) when memory is spent.
 */
export async function readBody(
  req: BodiedRequest,
  limit: number,
  tally: ByteTally = noTally,
): Promise<Uint8Array<ArrayBuffer>> {
  const header = req.headers.get("content-length");
  const declared = header === null ? null : Number(header);
  const incoming = bodyOf(req);
  if (declared !== null && declared > limit) {
    if (incoming instanceof ReadableStream) await incoming.cancel();
    throw bodyTooLarge(limit);
  }
  if (incoming instanceof Uint8Array) {
    if (incoming.byteLength > limit) throw bodyTooLarge(limit);
    tally.take(incoming.byteLength);
    return incoming;
  }
  if (incoming === null) return new Uint8Array(0);
  const body = new ArrivingBody(
    declared !== null && Number.isSafeInteger(declared) ? declared : null,
    tally,
  );
  const reader = incoming.getReader();
  try {
    while (true) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (err) {
        throw incompleteBody(messageOf(err));
      }
      if (chunk.done) break;
      if (body.length + chunk.value.byteLength > limit) throw bodyTooLarge(limit);
      body.append(chunk.value);
    }
  } catch (err) {
    reader.cancel().catch(() => {});
    throw err;
  }
  return body.bytes();
}

export interface RoutingFields {
  model: string;
  stream: boolean;
  /**
   * The body's skeleton for `checkRequestBody()`: its top levels with long strings and deep
   * values stood in for (see lib/json_scan.ts), never a copy of the whole body.
   */
  skeleton: Record<string, unknown>;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Checks that a body is one JSON object, on its bytes, and returns its skeleton.
 * @throws {ApiError} 400 for a body that is empty, not UTF-8 JSON, nests too deep or is not
 * an object.
 */
function objectSkeleton(bytes: Uint8Array, maxJsonDepth: number): Record<string, unknown> {
  if (bytes.byteLength === 0) {
    throw invalidRequest("invalid_body", "Request body is empty; expected a JSON object");
  }
  let skeleton: unknown;
  try {
    skeleton = jsonSkeleton(bytes, maxJsonDepth);
  } catch (err) {
    if (!(err instanceof JsonScanError)) throw err;
    if (err.kind === "utf8") {
      throw invalidRequest("invalid_body", "Request body is not valid UTF-8");
    }
    if (err.kind === "depth") {
      throw invalidRequest(
        "invalid_body",
        `Request body nests deeper than ${maxJsonDepth} levels (max_json_depth)`,
      );
    }
    throw invalidRequest("invalid_json", `Request body is not valid JSON: ${err.message}`);
  }
  if (typeof skeleton !== "object" || skeleton === null || Array.isArray(skeleton)) {
    throw invalidRequest("invalid_body", "Request body must be a JSON object");
  }
  return skeleton as Record<string, unknown>;
}

/**
 * Parses a (small) body that must be one JSON object.
 * @throws {ApiError} 400 as `parseRoutingFields` does.
 */
export function parseJsonObject(bytes: Uint8Array, maxJsonDepth: number): Record<string, unknown> {
  objectSkeleton(bytes, maxJsonDepth);
  return JSON.parse(utf8.decode(bytes));
}

/**
 * Reads the two fields the proxy routes on, without decoding or parsing the body whole.
 * @throws {ApiError} 400 for a body that is not a JSON object (empty, not UTF-8 JSON, too
 * deep) or names no model.
 */
export function parseRoutingFields(bytes: Uint8Array, maxJsonDepth: number): RoutingFields {
  const skeleton = objectSkeleton(bytes, maxJsonDepth);
  const { model, stream } = skeleton;
  if (typeof model !== "string" || model.trim() === "") {
    throw invalidRequest("missing_model", "You must provide a model parameter", "model");
  }
  return { model, stream: stream === true, skeleton };
}

/** The header a client sets to pick its priority class. */
export const PRIORITY_HEADER = "x-priority";

/**
 * The priority class a request asks for with `X-Priority: interactive|batch`, or null.
 * @throws {ApiError} 400 for any other value.
 */
export function readPriority(headers: Headers): Priority | null {
  const value = headers.get(PRIORITY_HEADER)?.trim().toLowerCase();
  if (value === undefined || value === "") return null;
  const priority = PRIORITIES.find((p) => p === value);
  if (priority === undefined) {
    throw invalidRequest(
      "invalid_priority",
      `Header X-Priority must be one of ${PRIORITIES.join(", ")}; got '${value}'`,
    );
  }
  return priority;
}

/** A request may lower its key's class (interactive → batch), never raise it. */
export function effectivePriority(keyClass: Priority, requested: Priority | null): Priority {
  return keyClass === "batch" || requested === "batch" ? "batch" : "interactive";
}
