/**
 * @module
 * SSE framing the proxy writes itself: comment lines (ignored by every client) to keep a
 * waiting stream alive, `reasoning_content` chunks (what chat UIs show in their thinking box)
 * for models that opt in, and a final `data: {"error":…}` event when a stream must end badly.
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

/** A chat chunk whose delta holds only `reasoning_content` (the first one also the role). */
export function sseReasoning(
  chunk: { id: string; model: string; created: number; first: boolean },
  text: string,
): Uint8Array {
  const delta = chunk.first
    ? { role: "assistant", content: null, reasoning_content: text }
    : { reasoning_content: text };
  const body = {
    id: chunk.id,
    object: "chat.completion.chunk",
    created: chunk.created,
    model: chunk.model,
    choices: [{ index: 0, delta, finish_reason: null }],
  };
  return encoder.encode(`data: ${JSON.stringify(body)}\n\n`);
}

/**
 * Events that end in `bytes` (each event ends with a blank line). An event split across two
 * reads right between its two newlines is missed: this counts for logs, not for framing.
 */
export function countEventEnds(bytes: Uint8Array): number {
  let ends = 0;
  // indexOf runs natively: no JavaScript step per byte on the streaming path.
  for (let i = bytes.indexOf(10); i !== -1 && i + 1 < bytes.length; i = bytes.indexOf(10, i + 1)) {
    if (bytes[i + 1] === 10) ends++;
  }
  return ends;
}
