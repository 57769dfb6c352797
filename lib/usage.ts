/**
 * @module
 * Token counts of an answer, read from its last bytes: OpenAI's `usage` object, or
 * llama-server's `timings` (which it sends at the end of every chat stream, even without
 * `stream_options.include_usage`). Pure; no I/O.
 */

import { concatBytes } from "./bytes.ts";

export interface TokenUsage {
  prompt: number;
  completion: number;
  /** Prompt tokens the backend found in its cache (a warm slot), when it says. */
  cached: number | null;
}

const BACKSLASH = 92, QUOTE = 34, OPEN = 123, CLOSE = 125;

/** The JSON object that starts at `text[start]` (`{`), or null when it is cut off. */
function objectAt(text: string, start: number): Record<string, unknown> | null {
  let depth = 0;
  let inString = false;
  // Char codes, not one-char strings: this walks every character of the object.
  for (let i = start; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (inString) {
      if (ch === BACKSLASH) i++;
      else if (ch === QUOTE) inString = false;
    } else if (ch === QUOTE) inString = true;
    else if (ch === OPEN) depth++;
    else if (ch === CLOSE && --depth === 0) {
      try {
        return JSON.parse(text.slice(start, i + 1));
      } catch {
        return null;
      }
    }
  }
  return null;
}

/** JSON's whitespace. */
const isSpace = (ch: string | undefined) => ch === " " || ch === "\n" || ch === "\r" || ch === "\t";

/** The last `"key": {…}` object in `text` (searched from the end: it is on every answer). */
function lastObject(text: string, key: string): Record<string, unknown> | null {
  const quoted = `"${key}"`;
  for (
    let at = text.lastIndexOf(quoted);
    at >= 0;
    at = at === 0 ? -1 : text.lastIndexOf(quoted, at - 1)
  ) {
    let i = at + quoted.length;
    while (isSpace(text[i])) i++;
    if (text[i++] !== ":") continue;
    while (isSpace(text[i])) i++;
    if (text[i] === "{") return objectAt(text, i);
  }
  return null;
}

const count = (value: unknown) => typeof value === "number" && value >= 0 ? value : 0;

/** llama-server's prompt tokens found in its cache, when its timings say. */
const cacheN = (timings: Record<string, unknown> | null) =>
  typeof timings?.cache_n === "number" ? count(timings.cache_n) : null;

/** Token counts in the tail of an answer (JSON body or event stream), or null. */
export function usageIn(tail: string): TokenUsage | null {
  const usage = lastObject(tail, "usage");
  // llama-server's timings are read only when usage does not say it all.
  if (usage !== null && typeof usage.prompt_tokens === "number") {
    const details = usage.prompt_tokens_details as Record<string, unknown> | undefined;
    const cached = typeof details?.cached_tokens === "number"
      ? count(details.cached_tokens)
      : cacheN(lastObject(tail, "timings"));
    return {
      prompt: count(usage.prompt_tokens),
      completion: count(usage.completion_tokens),
      cached,
    };
  }
  const t = lastObject(tail, "timings");
  if (t !== null && typeof t.predicted_n === "number") {
    return {
      prompt: count(t.prompt_n) + count(t.cache_n),
      completion: count(t.predicted_n),
      cached: cacheN(t),
    };
  }
  return null;
}

/** How much of an answer's end is kept to find its counts in. */
export const USAGE_TAIL_BYTES = 4096;

/**
 * The last USAGE_TAIL_BYTES of a stream, copied into one buffer as they pass, decoded only
 * once the stream ended.
 *
 * Copies, not references: holding each stream's last ~20 chunks alive kept ~5 KB of young
 * objects per stream through every young collection, which with 1,000 streams open made
 * each collection copy 4 MB and pause the event loop 6-18 ms.
 */
export class StreamTail {
  #ring: Uint8Array | null = null;
  /** Where the next byte goes. */
  #at = 0;
  #wrapped = false;

  push(chunk: Uint8Array): void {
    const ring = this.#ring ??= new Uint8Array(USAGE_TAIL_BYTES);
    const n = chunk.byteLength;
    if (n >= ring.length) {
      ring.set(chunk.subarray(n - ring.length));
      this.#at = 0;
      this.#wrapped = true;
      return;
    }
    const room = ring.length - this.#at;
    if (n < room) {
      ring.set(chunk, this.#at);
      this.#at += n;
      return;
    }
    ring.set(chunk.subarray(0, room), this.#at);
    ring.set(chunk.subarray(room));
    this.#at = n - room;
    this.#wrapped = true;
  }

  usage(): TokenUsage | null {
    const ring = this.#ring;
    if (ring === null) return null;
    // One decode of the joined bytes: a decode per chunk (with `stream` for characters cut
    // between chunks) was an op call each, most of what reading a stream's counts cost.
    const bytes = this.#wrapped
      ? concatBytes([ring.subarray(this.#at), ring.subarray(0, this.#at)])
      : ring.subarray(0, this.#at);
    return usageIn(new TextDecoder().decode(bytes));
  }
}
