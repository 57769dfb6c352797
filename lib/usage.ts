/**
 * @module
 * Token counts of an answer, read from its last bytes: OpenAI's `usage` object, or
 * llama-server's `timings` (which it sends at the end of every chat stream, even without
 * `stream_options.include_usage`). Pure; no I/O.
 */

import { concatBytes } from "./bytes.ts";
import { isDigit, isJsonSpace } from "./json_scan.ts";

export interface TokenUsage {
  prompt: number;
  completion: number;
  /** Prompt tokens the backend found in its cache (a warm slot), when it says. */
  cached: number | null;
}

const BACKSLASH = 92, QUOTE = 34, OPEN = 123, CLOSE = 125, OPEN_LIST = 91, CLOSE_LIST = 93;
const COLON = 58, COMMA = 44, MINUS = 45, DOT = 46, ZERO = 48, E = 69, e = 101;

const encoder = new TextEncoder();
/** A member name as its bytes, quotes included, made once. */
const key = (name: string) => encoder.encode(`"${name}"`);
const USAGE = key("usage"), TIMINGS = key("timings"), DETAILS = key("prompt_tokens_details");
const PROMPT = key("prompt_tokens"), COMPLETION = key("completion_tokens");
const CACHED = key("cached_tokens"), PROMPT_N = key("prompt_n"), CACHE_N = key("cache_n");
const PREDICTED_N = key("predicted_n");

/** Whether `bytes` hold `quoted` at `at`. */
function holds(bytes: Uint8Array, at: number, quoted: Uint8Array): boolean {
  if (at + quoted.length > bytes.length) return false;
  for (let i = 0; i < quoted.length; i++) if (bytes[at + i] !== quoted[i]) return false;
  return true;
}

/** The index of the quote that closes the string opened at `bytes[at]`. */
function stringEnd(bytes: Uint8Array, at: number): number {
  let i = at + 1;
  for (; i < bytes.length && bytes[i] !== QUOTE; i++) if (bytes[i] === BACKSLASH) i++;
  return i;
}

/**
 * A JSON object in an answer's bytes, read in place: its number members, and its object
 * members in turn. Bytes, not text, and no JSON.parse: once per request, with that code cold,
 * decoding the tail and parsing the ~100 characters of a usage object took ~16 µs of the
 * proxy's ~300 µs per request. UTF-8 keeps every byte of a multi-byte character above 0x7f,
 * so none of them is mistaken for JSON's quotes, braces or colons. Not lib/json_scan.ts's
 * scanner either (only its byte tests): it validates and builds the whole object, and timed in
 * place it took 8.7-10.9 µs a request here against 3.2-4.5 µs for reading the few members
 * asked for.
 */
class ObjectBytes {
  constructor(readonly bytes: Uint8Array, readonly open: number, readonly close: number) {}

  /** The number `name` holds, or undefined when it is missing or holds something else. */
  number(name: Uint8Array): number | undefined {
    const bytes = this.bytes;
    const at = this.#valueAt(name);
    if (at < 0) return undefined;
    const negative = bytes[at] === MINUS;
    let i = negative ? at + 1 : at;
    if (!isDigit(bytes[i])) return undefined;
    let value = 0;
    for (; isDigit(bytes[i]); i++) value = value * 10 + bytes[i] - ZERO;
    const next = bytes[i];
    if (next === DOT || next === e || next === E) {
      // A fraction or an exponent (`.`, `e`, `E`): rare in a count, so Number() reads it.
      let end = i + 1;
      while (
        end < this.close && !isJsonSpace(bytes[end]) && bytes[end] !== COMMA && bytes[end] !== CLOSE
      ) {
        end++;
      }
      const number = Number(String.fromCharCode(...bytes.subarray(at, end)));
      return Number.isNaN(number) ? undefined : number;
    }
    return negative ? -value : value;
  }

  /** The object `name` holds, or null. */
  object(name: Uint8Array): ObjectBytes | null {
    const at = this.#valueAt(name);
    return at < 0 || this.bytes[at] !== OPEN ? null : objectAt(this.bytes, at);
  }

  /** Where the value of this object's own member `name` starts, or -1. */
  #valueAt(name: Uint8Array): number {
    const bytes = this.bytes;
    let depth = 0;
    for (let i = this.open + 1; i < this.close; i++) {
      const ch = bytes[i];
      if (ch === QUOTE) {
        const end = stringEnd(bytes, i);
        if (depth === 0 && end - i + 1 === name.length && holds(bytes, i, name)) {
          let at = end + 1;
          while (isJsonSpace(bytes[at])) at++;
          // A string followed by a colon is a member's name; one that is a value is not.
          if (bytes[at] === COLON) {
            do at++; while (isJsonSpace(bytes[at]));
            return at;
          }
        }
        i = end;
      } else if (ch === OPEN || ch === OPEN_LIST) depth++;
      else if (ch === CLOSE || ch === CLOSE_LIST) depth--;
    }
    return -1;
  }
}

/** The JSON object that starts at `bytes[start]` (`{`), or null when it is cut off. */
function objectAt(bytes: Uint8Array, start: number): ObjectBytes | null {
  let depth = 0;
  for (let i = start; i < bytes.length; i++) {
    const ch = bytes[i];
    if (ch === QUOTE) i = stringEnd(bytes, i);
    else if (ch === OPEN) depth++;
    else if (ch === CLOSE && --depth === 0) return new ObjectBytes(bytes, start, i);
  }
  return null;
}

/** The last `"name": {…}` object in `bytes` (searched from the end: it is on every answer). */
function lastObject(bytes: Uint8Array, name: Uint8Array): ObjectBytes | null {
  for (
    let at = bytes.lastIndexOf(QUOTE);
    at >= 0;
    at = at === 0 ? -1 : bytes.lastIndexOf(QUOTE, at - 1)
  ) {
    if (!holds(bytes, at, name)) continue;
    let i = at + name.length;
    while (isJsonSpace(bytes[i])) i++;
    if (bytes[i++] !== COLON) continue;
    while (isJsonSpace(bytes[i])) i++;
    if (bytes[i] === OPEN) return objectAt(bytes, i);
  }
  return null;
}

const count = (value: number | undefined) => value !== undefined && value >= 0 ? value : 0;

/** llama-server's prompt tokens found in its cache, when its timings say. */
function cacheN(timings: ObjectBytes | null): number | null {
  const n = timings?.number(CACHE_N);
  return n === undefined ? null : count(n);
}

/** Token counts in the last bytes of an answer (JSON body or event stream), or null. */
export function usageIn(tail: Uint8Array): TokenUsage | null {
  const usage = lastObject(tail, USAGE);
  const prompt = usage?.number(PROMPT);
  // llama-server's timings are read only when usage does not say it all.
  if (usage != null && prompt !== undefined) {
    const cachedTokens = usage.object(DETAILS)?.number(CACHED);
    return {
      prompt: count(prompt),
      completion: count(usage.number(COMPLETION)),
      cached: cachedTokens !== undefined ? count(cachedTokens) : cacheN(lastObject(tail, TIMINGS)),
    };
  }
  const timings = lastObject(tail, TIMINGS);
  const predicted = timings?.number(PREDICTED_N);
  if (timings != null && predicted !== undefined) {
    return {
      prompt: count(timings.number(PROMPT_N)) + count(timings.number(CACHE_N)),
      completion: count(predicted),
      cached: cacheN(timings),
    };
  }
  return null;
}

/**
 * How much of an answer's end is kept to find its counts in, streamed or not: counts that
 * begin further from the end (behind a long final chunk) are not read.
 */
export const USAGE_TAIL_BYTES = 4096;

/**
 * The last USAGE_TAIL_BYTES of a stream, copied into one buffer as they pass, read once the
 * stream ended.
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
    return usageIn(
      this.#wrapped
        ? concatBytes([ring.subarray(this.#at), ring.subarray(0, this.#at)])
        : ring.subarray(0, this.#at),
    );
  }
}
