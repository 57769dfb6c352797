/**
 * @module
 * What a route answers with: a web Response (Hono's routes, streams), or a CompleteAnswer, a
 * backend's or a peer's JSON read whole before it is relayed. The server writes a complete
 * answer in one go, and nothing builds a Response for it: a Response, its Headers and the header
 * copying were ~7% of a model request's CPU.
 */
import type { HeaderList } from "./http_headers.ts";

/** A route's answer. */
export type Answer = Response | CompleteAnswer;

export class CompleteAnswer {
  constructor(
    readonly status: number,
    readonly statusText: string,
    /** Lower-case names, without framing or hop-by-hop headers; values checked as a Response would. */
    readonly headers: HeaderList,
    readonly bytes: Uint8Array<ArrayBuffer>,
  ) {}

  get ok(): boolean {
    return this.status >= 200 && this.status <= 299;
  }

  text(): Promise<string> {
    return Promise.resolve(new TextDecoder().decode(this.bytes));
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
