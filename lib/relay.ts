/**
 * @module
 * Turns a job's outcome into the client's response, in one place. Non-streaming requests get
 * the backend's response as is. Streaming requests that must wait get an SSE response at
 * once, with comment lines (or `reasoning_content` chunks) while they wait; any failure after
 * that point becomes a final SSE error event, because the status line is already sent. A
 * stream is a StreamAnswer whose ChunkSource the server reads directly: each backend chunk goes
 * from the backend's read to the client's socket write with no web stream in between.
 */
import {
  ApiError,
  messageOf,
  requestTimeout,
  upstreamError,
  upstreamStreamBroken,
} from "./errors.ts";
import type { Job, JobOutcome } from "./jobs.ts";
import { countEventEnds, sseComment, sseError, sseReasoning } from "./sse.ts";
import { bytesSource, type ChunkSource, readerSource } from "./chunk_source.ts";
import { type Answer, CompleteAnswer, hasNoBody, StreamAnswer } from "./answer.ts";
import type { HeaderList } from "./http_headers.ts";

export interface RelayOptions {
  keepaliveMs: number;
  timeoutS: number;
  /** One line saying why the job still waits, e.g. `queued position=3 eta=40s`. */
  describeWait(job: Job): string;
  /** Headers for a stream opened while its job waits (`x-queue-position`, …). */
  waitHeaders(job: Job): Record<string, string>;
  /** The client went away (the response stream was cancelled). */
  onClientGone(): void;
  /**
   * How waiting is shown: SSE comments (invisible), or `reasoning_content` chunks a chat UI
   * shows in its thinking box (chat completions of models with `wait_feedback: reasoning`).
   */
  waitFeedback: "comment" | "reasoning";
}

const SSE_HEADERS: HeaderList = [
  ["content-type", "text/event-stream"],
  ["cache-control", "no-cache"],
  ["x-accel-buffering", "no"],
];

/**
 * Waits as long as needed for `job` and builds the response.
 * @throws {ApiError} for a non-streaming job that failed (rendered by the route layer).
 */
export async function respond(job: Job, options: RelayOptions): Promise<Answer> {
  if (!job.stream) return unwrap(await job.outcome);
  if (job.state === "queued") {
    const headers = [...SSE_HEADERS, ...Object.entries(options.waitHeaders(job))];
    return new StreamAnswer(200, "", headers, new SseRelay(job, options, null));
  }
  // Already dispatched: the backend's status line is seconds away at most, so keep it.
  const outcome = await job.outcome;
  if (outcome.kind === "error") throw outcome.error;
  const { response } = outcome;
  // A complete answer (an error, or JSON where a stream was asked for) goes out as it is.
  if (response instanceof CompleteAnswer || !response.ok || hasNoBody(response)) return response;
  // A Response's Headers iterate lower-case, as a list has them.
  const headers = response instanceof StreamAnswer ? response.headers : [...response.headers];
  const relay = new SseRelay(job, options, sourceOf(outcome));
  return new StreamAnswer(response.status, response.statusText, headers, relay);
}

/** The backend's chunks: its event stream read directly, or whatever body it sent. */
function sourceOf(outcome: Extract<JobOutcome, { kind: "response" }>): ChunkSource {
  const { response } = outcome;
  if (response instanceof CompleteAnswer) return bytesSource(response.bytes);
  if (response instanceof StreamAnswer) return response.source;
  return readerSource(response.body!);
}

function unwrap(outcome: JobOutcome): Answer {
  if (outcome.kind === "error") throw outcome.error;
  return outcome.response;
}

const TICK = Symbol("tick");

function nextTick<T>(promise: Promise<T>, ms: number): Promise<T | typeof TICK> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const tick = new Promise<typeof TICK>((resolve) => timer = setTimeout(() => resolve(TICK), ms));
  return Promise.race([promise, tick]).finally(() => clearTimeout(timer));
}

/** The error to report once a stream broke mid-way. */
function streamFailure(job: Job, err: unknown, timeoutS: number): ApiError {
  if (job.timedOut) return requestTimeout(timeoutS);
  if (err instanceof ApiError) return err;
  return upstreamStreamBroken(messageOf(err));
}

/** Backend answered an error status after our SSE headers went out: say it as an event. */
async function upstreamErrorEvent(response: Answer): Promise<ApiError> {
  const text = await response.text().catch(() => "");
  let message = text.slice(0, 2000) || response.statusText;
  try {
    const parsed = JSON.parse(text);
    if (typeof parsed?.error?.message === "string") message = parsed.error.message;
  } catch {
    // keep the raw text
  }
  return upstreamError(response.status, message);
}

/** Frames one "still waiting" note the way the job's client wants to see it. */
function waitNotes(job: Job, options: RelayOptions): () => Uint8Array {
  if (options.waitFeedback === "comment") return () => sseComment(options.describeWait(job));
  const chunk = {
    id: `chatcmpl-${job.id}`,
    model: job.model,
    created: Math.floor(Date.now() / 1000),
    first: true,
  };
  return () => {
    const frame = sseReasoning(chunk, `${options.describeWait(job)}\n`);
    chunk.first = false;
    return frame;
  };
}

/**
 * A streaming job's body, read by the server one chunk at a time: "still waiting" notes every
 * `keepaliveMs` while the job waits (none once it was dispatched), then the backend's chunks
 * as they come, and a final error event if it must end badly (the status line is sent).
 */
class SseRelay implements ChunkSource {
  readonly #job: Job;
  readonly #options: RelayOptions;
  #source: ChunkSource | null;
  #note: (() => Uint8Array) | null = null;
  /** A read took the job's answer (its stream, or its error to report): it disposes of it. */
  #answerTaken = false;
  /** The read in progress, which a let-go that reads on must wait for. */
  #reading: Promise<Uint8Array | null> | null = null;
  #ended = false;

  constructor(job: Job, options: RelayOptions, source: ChunkSource | null) {
    this.#job = job;
    this.#options = options;
    this.#source = source;
  }

  read(): Promise<Uint8Array | null> {
    if (this.#ended) return Promise.resolve(null);
    // Once the backend's chunks flow, a read is the source's promise and one `then` with
    // handlers made once: an async function here was a frame per chunk per stream that every
    // young collection copied while it waited (see BackendBody.read).
    const source = this.#source;
    return this.#reading = source === null
      ? this.#wait()
      : source.read().then(this.#sent, this.#broke);
  }

  /** The job still waits: a note every `keepaliveMs`, then the first of the backend's chunks. */
  async #wait(): Promise<Uint8Array | null> {
    // The first note goes out with the headers, at once.
    if (this.#note === null) return (this.#note = waitNotes(this.#job, this.#options))();
    const next = await nextTick(this.#job.outcome, this.#options.keepaliveMs);
    if (this.#ended) return null;
    if (next === TICK) return this.#note();
    this.#answerTaken = true;
    if (next.kind === "error") return this.#last(sseError(next.error));
    if (!next.response.ok || hasNoBody(next.response)) {
      return this.#last(sseError(await upstreamErrorEvent(next.response)));
    }
    const source = this.#source = sourceOf(next);
    return source.read().then(this.#sent, this.#broke);
  }

  /** The answer's chunks once the job's outcome came; null when it came without any. */
  async #lateSource(): Promise<ChunkSource | null> {
    const outcome = await this.#job.outcome;
    // A read took the answer first: its stream is the source, or it reads the error's body.
    if (this.#answerTaken) return this.#source;
    if (outcome.kind === "error" || hasNoBody(outcome.response)) return null;
    return this.#source = sourceOf(outcome);
  }

  readonly #sent = (chunk: Uint8Array | null): Uint8Array | null => {
    if (chunk === null) this.#ended = true;
    else this.#job.chunksSent += countEventEnds(chunk);
    return chunk;
  };

  readonly #broke = (err: unknown): Uint8Array | null => {
    if (this.#ended) return null;
    return this.#last(sseError(streamFailure(this.#job, err, this.#options.timeoutS)));
  };

  #last(event: Uint8Array): Uint8Array {
    this.#ended = true;
    return event;
  }

  async cancel(reason: unknown): Promise<void> {
    this.#ended = true;
    this.#options.onClientGone();
    // Cancelled while the job waited: a job already running (a model set to finish on disconnect
    // does not abort it) still gets its answer, and its worker is held until that answer was read
    // to its end or cancelled, as one that came before the client left.
    const source = this.#source ?? await this.#lateSource();
    if (source === null) return;
    const job = this.#job;
    // The client left mid-stream: abort the backend's generation (frees its slot), or, for a
    // model set to `on_disconnect: finish` (some backends crash on aborts), read it to the end.
    if (!job.finishOnDisconnect || job.signal.aborted) return await source.cancel(reason);
    await this.#reading?.catch(() => null);
    while (await source.read().catch(() => null) !== null) {
      // discard: nobody is listening any more
    }
  }
}
