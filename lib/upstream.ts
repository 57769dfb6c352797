/**
 * @module
 * The one forwarding path: send a job's body verbatim to its backend and hand back the
 * response, plus a promise that settles when its body is finished, cancelled or broken (the
 * worker holds its slot until then), on lib/backend_client.ts. Event streams are relayed chunk
 * by chunk as they come; other answers (complete JSON documents) are read whole. Either way the answer's
 * token counts are read from its end into `job.usage`.
 */
import { forwardedRequestHeaderList, type HeaderList, isEventStreamType } from "./http_headers.ts";
import type { BackendBody, BackendClient, BackendResponse } from "./backend_client.ts";
import type { ModelConfig } from "./config_types.ts";
import type { Job } from "./jobs.ts";
import { messageOf } from "./errors.ts";
import type { ChunkSource } from "./chunk_source.ts";
import { CompleteAnswer, NO_BODY, StreamAnswer } from "./answer.ts";
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
  response: CompleteAnswer | StreamAnswer;
  /** Settles when the body was fully read, cancelled, broke, or the job was aborted. */
  done: Promise<void>;
}

/**
 * Forwards `job` to `model`'s backend on `client`.
 * @throws {UpstreamUnreachableError} when no response came back (refused, reset).
 * @throws the job signal's reason when the client left or the request timed out.
 */
export async function forward(
  client: BackendClient,
  job: Job,
  model: ModelConfig,
): Promise<Forwarded> {
  const url = targetUrl(model.backendUrl, job.path);
  let upstream: BackendResponse;
  try {
    upstream = await client.send({
      method: job.method,
      url,
      headers: forwardedRequestHeaderList(job.headers, IDENTITY),
      body: job.method === "GET" || job.method === "HEAD" ? null : job.body,
      signal: job.signal,
    });
  } catch (err) {
    if (job.signal.aborted) throw job.signal.reason;
    throw new UpstreamUnreachableError(url, err);
  }
  const { status, statusText, headers } = upstream;
  if (NO_BODY.has(status)) {
    await upstream.body.cancel();
    const response = new CompleteAnswer(status, statusText, headers, EMPTY);
    return { response, done: Promise.resolve() };
  }
  if (!isEventStreamType(contentTypeOf(upstream.headers))) {
    // A JSON answer is complete only at its end anyway; reading it whole here frees the
    // worker the moment the backend is done and keeps per-chunk JS off the hot path.
    const bytes = await upstream.body.bytes();
    // A view of the tail, not a copy of it.
    job.usage = usageIn(bytes.subarray(-USAGE_TAIL_BYTES));
    const response = new CompleteAnswer(status, statusText, headers, bytes);
    return { response, done: Promise.resolve() };
  }
  const events = new EventStream(upstream.body, job.signal);
  return {
    response: new StreamAnswer(status, statusText, headers, events),
    done: events.done.then(() => void (job.usage = events.usage())),
  };
}

const EMPTY = new Uint8Array(0);

/**
 * Asks the backend for an uncompressed answer (the proxy reads its token counts), whatever
 * the client accepts; the client's own accept-encoding is replaced.
 */
const IDENTITY: HeaderList = [["accept-encoding", "identity"]];

function contentTypeOf(headers: HeaderList): string {
  for (const [name, value] of headers) if (name === "content-type") return value;
  return "";
}

/**
 * A backend's event stream, read chunk by chunk as the backend sent it. It knows when the body
 * ended (`done`) and keeps the tail the token counts are read from.
 *
 * One consumer reads it, through `read()`.
 */
export class EventStream implements ChunkSource {
  /** Settles when the body was fully read, cancelled, broke, or the job was aborted. */
  readonly done: Promise<void>;
  #finish!: () => void;
  readonly #body: BackendBody;
  #tail = new StreamTail();

  constructor(body: BackendBody, signal: AbortSignal) {
    this.done = new Promise<void>((resolve) => this.#finish = resolve);
    this.#body = body;
    // If nobody ever reads the body (client gone before it did), the abort still frees the slot.
    signal.addEventListener("abort", () => this.#finish(), { once: true });
    // An abort before this listener was added (between the answer's head and here) fired none.
    if (signal.aborted) void this.cancel(signal.reason);
  }

  /**
   * The next chunk, as one read from the backend got it, or null at the end.
   * @throws when the body broke (or was cancelled while this read waited).
   */
  read(): Promise<Uint8Array | null> {
    // A `then` with handlers made once, not an async function: see BackendBody.read.
    return this.#body.read().then(this.#took, this.#broke);
  }

  readonly #took = (chunk: Uint8Array | null): Uint8Array | null => {
    if (chunk === null) this.#finish();
    else this.#tail.push(chunk);
    return chunk;
  };

  readonly #broke = (err: unknown): never => {
    this.#finish();
    throw err;
  };

  /** Stops reading: the backend's request is aborted. */
  async cancel(_reason: unknown): Promise<void> {
    this.#finish();
    await this.#body.cancel();
  }

  /** Token counts from the stream's end (once it ended). */
  usage(): TokenUsage | null {
    return this.#tail.usage();
  }
}
