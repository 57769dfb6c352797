/**
 * @module
 * The one forwarding path: send a job's body verbatim to its backend and hand back the
 * response, plus a promise that settles when its body is finished, cancelled or broken (the
 * worker holds its slot until then). Event streams are piped chunk by chunk as they come;
 * other answers (complete JSON documents) are read whole, natively. Either way the answer's
 * token counts are read from its end into `job.usage`.
 */
import {
  forwardedRequestHeaderList,
  type HeaderList,
  isEventStream,
  relayedResponseHeaderList,
} from "./http_headers.ts";
import type { ModelConfig } from "./config_types.ts";
import type { Job } from "./jobs.ts";
import { messageOf } from "./errors.ts";
import { type ChunkSource, documentResponse, streamOf } from "./chunk_source.ts";
import { StreamTail, type TokenUsage, USAGE_TAIL_BYTES, usageIn } from "./usage.ts";

/** The backend could not be reached, so no byte went to the client: safe to retry. */
export class UpstreamUnreachableError extends Error {
  constructor(url: string, cause: unknown) {
    super(`Backend ${url} did not answer (${messageOf(cause)})`, {
      cause,
    });
    this.name = "UpstreamUnreachableError";
  }
}

/**
 * Where a request goes: a backend URL ending in `/v1` takes the part of the path after the
 * client's `/v1` (the seed's `backend_url: http://host:8080/v1`); any other base URL gets the
 * whole path appended.
 */
export function targetUrl(backendUrl: string, pathAndQuery: string): string {
  const base = backendUrl.replace(/\/+$/, "");
  if (base.endsWith("/v1") && pathAndQuery.startsWith("/v1/")) {
    return base + pathAndQuery.slice(3);
  }
  return base + pathAndQuery;
}

export interface Forwarded {
  response: Response;
  /** The backend's event stream, for the relay to read without `response.body`; else null. */
  events: EventStream | null;
  /** Settles when the body was fully read, cancelled, broke, or the job was aborted. */
  done: Promise<void>;
}

/**
 * Forwards `job` to `model`'s backend.
 * @throws {UpstreamUnreachableError} when no response came back (refused, reset).
 * @throws the job signal's reason when the client left or the request timed out.
 */
export async function forward(job: Job, model: ModelConfig): Promise<Forwarded> {
  const url = targetUrl(model.backendUrl, job.path);
  let upstream: Response;
  try {
    upstream = await fetch(url, {
      method: job.method,
      // Name-value lists, not Headers: fetch and Response take a list in one pass, while a
      // Headers given to them is walked again through its (slow) iterator.
      headers: forwardedRequestHeaderList(job.headers, NO_HEADERS),
      body: job.method === "GET" || job.method === "HEAD" ? undefined : job.body,
      signal: job.signal,
      redirect: "manual",
    });
  } catch (err) {
    if (job.signal.aborted) throw job.signal.reason;
    throw new UpstreamUnreachableError(url, err);
  }
  const init = {
    status: upstream.status,
    statusText: upstream.statusText,
    headers: relayedResponseHeaderList(upstream.headers, NO_HEADERS),
  };
  if (!isEventStream(upstream.headers) || upstream.body === null) {
    // A JSON answer is complete only at its end anyway; reading it natively here frees the
    // worker the moment the backend is done and keeps per-chunk JS off the hot path.
    const bytes = new Uint8Array(await upstream.arrayBuffer());
    // A view of the tail, not a copy of it.
    job.usage = usageIn(decoder.decode(bytes.subarray(-USAGE_TAIL_BYTES)));
    return { response: documentResponse(bytes, init), events: null, done: Promise.resolve() };
  }
  const events = new EventStream(upstream.body, job.signal);
  return {
    response: new Response(streamOf(events), init),
    events,
    done: events.done.then(() => void (job.usage = events.usage())),
  };
}

/** Nothing to add to a forwarded message's headers. */
const NO_HEADERS: HeaderList = [];

/** One decoder for every answer's tail: decode() without `stream` keeps no state between calls. */
const decoder = new TextDecoder();

/** The first read buffer of an event stream; one that fills it gets a bigger one, up to the max. */
const FIRST_READ_BYTES = 4096;
const MAX_READ_BYTES = 65536;

/**
 * A backend's event stream, read chunk by chunk as the backend sent it, with one read buffer
 * of its own that every read reuses; each chunk is handed on as a copy of exactly its bytes.
 * (fetch's default reader allocates and zeroes a fresh 64 KB buffer per read, and a chunk's
 * view keeps all of it alive: under 1,000 streams that was ~40% of the proxy's CPU, and ~1 MB
 * per stream while the usage tail held its last chunks.) It knows when the body ended (`done`)
 * and keeps the tail the token counts are read from.
 *
 * One consumer reads it: through `read()`, or as a web stream through `streamOf()`.
 */
export class EventStream implements ChunkSource {
  /** Settles when the body was fully read, cancelled, broke, or the job was aborted. */
  readonly done: Promise<void>;
  #finish!: () => void;
  #reader: ReadableStreamBYOBReader;
  #buffer = new ArrayBuffer(FIRST_READ_BYTES);
  #tail = new StreamTail();

  constructor(source: ReadableStream<Uint8Array>, signal: AbortSignal) {
    this.done = new Promise<void>((resolve) => this.#finish = resolve);
    // If nobody ever reads the body (client gone before it did), the abort still frees the slot.
    signal.addEventListener("abort", () => this.#finish(), { once: true });
    this.#reader = source.getReader({ mode: "byob" });
  }

  /**
   * The next chunk, as one read from the backend got it, or null at the end.
   * @throws when the body broke (or was cancelled while this read waited).
   */
  async read(): Promise<Uint8Array | null> {
    let result: ReadableStreamReadResult<Uint8Array>;
    try {
      result = await this.#reader.read(new Uint8Array(this.#buffer));
    } catch (err) {
      this.#finish();
      throw err;
    }
    if (result.done) {
      this.#finish();
      return null;
    }
    const view = result.value;
    // The read hands the buffer back (it was transferred to it); a full one was too small.
    this.#buffer = view.byteLength === view.buffer.byteLength && view.byteLength < MAX_READ_BYTES
      ? new ArrayBuffer(view.byteLength * 2)
      : view.buffer as ArrayBuffer;
    const chunk = view.slice();
    this.#tail.push(chunk);
    return chunk;
  }

  /** Stops reading: the backend's request is aborted. */
  async cancel(reason: unknown): Promise<void> {
    this.#finish();
    await this.#reader.cancel(reason);
  }

  /** Token counts from the stream's end (once it ended). */
  usage(): TokenUsage | null {
    return this.#tail.usage();
  }
}
