/**
 * @module
 * The one forwarding path: send a job's body verbatim to its backend and hand back the
 * response, plus a promise that settles when its body is finished, cancelled or broken (the
 * worker holds its slot until then). Event streams are piped chunk by chunk as they come;
 * other answers (complete JSON documents) are read whole, natively. Either way the answer's
 * token counts are read from its end into `job.usage`.
 */
import { forwardedRequestHeaders, relayedResponseHeaders } from "./http_headers.ts";
import type { ModelConfig } from "./config_types.ts";
import type { Job } from "./jobs.ts";
import { messageOf } from "./errors.ts";
import { StreamTail, USAGE_TAIL_BYTES, usageIn } from "./usage.ts";

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
      headers: forwardedRequestHeaders(job.headers),
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
    headers: relayedResponseHeaders(upstream.headers),
  };
  if (!isEventStream(upstream.headers)) {
    // A JSON answer is complete only at its end anyway; reading it natively here frees the
    // worker the moment the backend is done and keeps per-chunk JS off the hot path.
    const bytes = await upstream.arrayBuffer();
    job.usage = usageIn(new TextDecoder().decode(bytes.slice(-USAGE_TAIL_BYTES)));
    return { response: new Response(bytes, init), done: Promise.resolve() };
  }
  const tail = new StreamTail();
  const { body, done } = trackBody(upstream.body, job.signal, tail);
  return {
    response: new Response(body, init),
    done: done.then(() => void (job.usage = tail.usage())),
  };
}

function isEventStream(headers: Headers): boolean {
  return (headers.get("content-type") ?? "").toLowerCase().startsWith("text/event-stream");
}

/**
 * Wraps a body so the caller learns when it ends. Pull-based with no buffer of its own: a
 * chunk moves on as soon as the consumer asks, so streams keep their pacing.
 */
export function trackBody(
  source: ReadableStream<Uint8Array> | null,
  signal: AbortSignal,
  tail?: StreamTail,
): { body: ReadableStream<Uint8Array> | null; done: Promise<void> } {
  let finish!: () => void;
  const done = new Promise<void>((resolve) => finish = resolve);
  if (source === null) {
    finish();
    return { body: null, done };
  }
  // If nobody ever reads the body (client gone before it did), the abort still frees the slot.
  signal.addEventListener("abort", () => finish(), { once: true });
  const reader = source.getReader();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const chunk = await reader.read();
        if (chunk.done) {
          controller.close();
          finish();
        } else {
          tail?.push(chunk.value);
          controller.enqueue(chunk.value);
        }
      } catch (err) {
        controller.error(err);
        finish();
      }
    },
    async cancel(reason) {
      finish();
      await reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
  return { body, done };
}
