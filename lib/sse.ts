/**
 * @module
 * SSE framing the proxy writes itself: comment lines (ignored by every client) to keep a
 * waiting stream alive, and a final `data: {"error":…}` event when a stream must end badly.
 */
import type { ApiError } from "./errors.ts";

const encoder = new TextEncoder();

/** `: text\n\n`; newlines in `text` would end the comment, so they become spaces. */
export function sseComment(text: string): Uint8Array {
  return encoder.encode(`: ${text.replace(/[\r\n]+/g, " ")}\n\n`);
}

/** The error event llama-server and OpenAI SDKs use once a stream has started. */
export function sseError(error: ApiError): Uint8Array {
  return encoder.encode(`data: ${JSON.stringify(error.toJSON())}\n\n`);
}
