/**
 * @module
 * Turns a job's outcome into the client's response, in one place. Non-streaming requests get
 * the backend's response as is. Streaming requests that must wait get an SSE response at
 * once, with comment lines (or `reasoning_content` chunks) while they wait; any failure after that point becomes a final
 * SSE error event, because the status line is already sent.
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

const SSE_HEADERS = {
  "content-type": "text/event-stream",
  "cache-control": "no-cache",
  "x-accel-buffering": "no",
};

/**
 * Waits as long as needed for `job` and builds the response.
 * @throws {ApiError} for a non-streaming job that failed (rendered by the route layer).
 */
export async function respond(job: Job, options: RelayOptions): Promise<Response> {
  if (!job.stream) return unwrap(await job.outcome);
  if (job.state === "queued") {
    return new Response(waitingStream(job, options), {
      headers: { ...SSE_HEADERS, ...options.waitHeaders(job) },
    });
  }
  // Already dispatched: the backend's status line is seconds away at most, so keep it.
  const response = unwrap(await job.outcome);
  if (!response.ok || response.body === null) return response;
  return new Response(relayStream(job, response.body, options), {
    status: response.status,
    headers: response.headers,
  });
}

function unwrap(outcome: JobOutcome): Response {
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
async function upstreamErrorEvent(response: Response): Promise<ApiError> {
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

function waitingStream(job: Job, options: RelayOptions): ReadableStream<Uint8Array> {
  let reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  const note = waitNotes(job, options);
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(note());
    },
    async pull(controller) {
      if (reader === null) {
        const next = await nextTick(job.outcome, options.keepaliveMs);
        if (next === TICK) return controller.enqueue(note());
        if (next.kind === "error") {
          controller.enqueue(sseError(next.error));
          return controller.close();
        }
        if (!next.response.ok || next.response.body === null) {
          controller.enqueue(sseError(await upstreamErrorEvent(next.response)));
          return controller.close();
        }
        reader = next.response.body.getReader();
      }
      await pipeOne(job, reader, controller, options.timeoutS);
    },
    async cancel(reason) {
      options.onClientGone();
      if (reader) await letGo(job, reader, reason);
    },
  }, { highWaterMark: 0 });
}

function relayStream(
  job: Job,
  body: ReadableStream<Uint8Array>,
  options: RelayOptions,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    pull: (controller) => pipeOne(job, reader, controller, options.timeoutS),
    async cancel(reason) {
      options.onClientGone();
      await letGo(job, reader, reason);
    },
  }, { highWaterMark: 0 });
}

/**
 * The client left mid-stream: abort the backend's generation (frees its slot), or, for a
 * model set to `on_disconnect: finish` (some backends crash on aborts), read it to the end.
 */
async function letGo(
  job: Job,
  reader: ReadableStreamDefaultReader<Uint8Array>,
  reason: unknown,
): Promise<void> {
  if (!job.finishOnDisconnect || job.signal.aborted) return await reader.cancel(reason);
  while (!(await reader.read().catch(() => ({ done: true }))).done) {
    // discard: nobody is listening any more
  }
}

async function pipeOne(
  job: Job,
  reader: ReadableStreamDefaultReader<Uint8Array>,
  controller: ReadableStreamDefaultController<Uint8Array>,
  timeoutS: number,
): Promise<void> {
  try {
    const chunk = await reader.read();
    if (chunk.done) return controller.close();
    controller.enqueue(chunk.value);
    job.chunksSent += countEventEnds(chunk.value);
  } catch (err) {
    controller.enqueue(sseError(streamFailure(job, err, timeoutS)));
    controller.close();
  }
}
