/**
 * @module
 * A complete answer held as its bytes: a backend's or a peer's JSON, read whole before it is
 * relayed. The server writes it in one go, and nothing builds a web Response for it: a Response,
 * its Headers and the header copying were ~7% of a model request's CPU.
 */
import type { HeaderList } from "./http_headers.ts";

export class Document {
  constructor(
    readonly status: number,
    readonly statusText: string,
    /** Lower-case names, without framing or hop-by-hop headers. */
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

/** Whether `answer` has no body to relay (a status that has none). */
export function bodiless(answer: Answer): boolean {
  return answer instanceof Response ? answer.body === null : NO_BODY.has(answer.status);
}

/** What a route answers with. */
export type Answer = Response | Document;

/** Sets header `name` (lower-case) on `answer`, replacing any it had. */
export function setHeader(answer: Answer, name: string, value: string): void {
  if (answer instanceof Response) return answer.headers.set(name, value);
  const headers = answer.headers;
  for (let i = headers.length - 1; i >= 0; i--) if (headers[i][0] === name) headers.splice(i, 1);
  headers.push([name, value]);
}
