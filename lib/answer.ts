/**
 * @module
 * What a route answers with: a web Response (Hono's routes, a peer's stream), a CompleteAnswer,
 * a backend's or a peer's JSON read whole before it is relayed, or a StreamAnswer, a backend's
 * event stream read chunk by chunk. The server writes a complete answer in one go and a stream
 * chunk by chunk as it reads it, and nothing builds a Response for either: a Response, its
 * Headers and the header copying were ~7% of a model request's CPU, and a stream's two
 * Responses and two web streams (the backend's, then the relay's) were most of what a thousand
 * streams arriving at once kept the event loop busy with and the collector copying.
 */
import type { HeaderList } from "./http_headers.ts";
import { type ChunkSource, readAll } from "./chunk_source.ts";

/** A route's answer. */
export type Answer = Response | CompleteAnswer | StreamAnswer;

/** What the server needs of an answer it writes itself: its status line and header list. */
abstract class ListedAnswer {
  constructor(
    readonly status: number,
    readonly statusText: string,
    /** Lower-case names, without framing or hop-by-hop headers; values checked as a Response would. */
    readonly headers: HeaderList,
  ) {}

  get ok(): boolean {
    return this.status >= 200 && this.status <= 299;
  }
}

/** An answer whose bytes are all at hand. */
export class CompleteAnswer extends ListedAnswer {
  constructor(
    status: number,
    statusText: string,
    headers: HeaderList,
    readonly bytes: Uint8Array<ArrayBuffer>,
  ) {
    super(status, statusText, headers);
  }

  text(): Promise<string> {
    return Promise.resolve(new TextDecoder().decode(this.bytes));
  }
}

/** An answer whose body is read one chunk at a time from `source`, by one reader. */
export class StreamAnswer extends ListedAnswer {
  constructor(
    status: number,
    statusText: string,
    headers: HeaderList,
    readonly source: ChunkSource,
  ) {
    super(status, statusText, headers);
  }

  /** The whole body, read to its end. */
  bytes(): Promise<Uint8Array<ArrayBuffer>> {
    return readAll(this.source);
  }

  /** The whole body as text (an error status's message). */
  async text(): Promise<string> {
    return new TextDecoder().decode(await this.bytes());
  }
}

/**
 * Final statuses whose answers have no body (a client would not read one); interim ones never
 * come this far.
 */
export const NO_BODY = new Set([204, 205, 304]);

/** Whether `answer` has no body to relay (its status has none). */
export function hasNoBody(answer: Answer): boolean {
  return answer instanceof Response ? answer.body === null : NO_BODY.has(answer.status);
}

/** Sets header `name` (lower-case) on `answer`, replacing any it had. */
export function setHeader(answer: Answer, name: string, value: string): void {
  if (answer instanceof Response) return answer.headers.set(name, value);
  const headers = answer.headers;
  for (let i = headers.length - 1; i >= 0; i--) if (headers[i][0] === name) headers.splice(i, 1);
  headers.push([name, value]);
}

/** All of `answer`'s body. */
export async function answerBytes(answer: Answer): Promise<Uint8Array<ArrayBuffer>> {
  if (answer instanceof CompleteAnswer) return answer.bytes;
  if (answer instanceof StreamAnswer) return await answer.bytes();
  return answer.body === null ? new Uint8Array(0) : new Uint8Array(await answer.arrayBuffer());
}

/** Lets go of `answer`'s body unread: a stream's backend request is aborted. Never throws. */
export async function cancelAnswer(answer: Answer, reason?: unknown): Promise<void> {
  if (answer instanceof CompleteAnswer) return;
  const cancelled = answer instanceof StreamAnswer
    ? answer.source.cancel(reason)
    : answer.body?.cancel(reason);
  await cancelled?.catch(() => {});
}
