/**
 * @module
 * Validates a JSON request body on its bytes and returns a small skeleton of it, so the proxy
 * can route and check a 60 MB chat body without decoding it to a string or building its tree
 * (either would be a second and third copy of the body while it is parsed).
 *
 * The skeleton keeps what the request checks look at and stands in for the rest with a value
 * of the same type: containers down to KEEP_CONTAINERS_TO levels (the top object, its arrays
 * such as `messages`, and their elements), scalars one level below that, strings up to
 * KEPT_STRING_BYTES bytes. Longer strings become "", deeper containers {} or [], deeper
 * numbers 0. Everything is still validated: it accepts exactly what `JSON.parse` of the
 * UTF-8 text accepts (a leading byte-order mark included, as TextDecoder drops it).
 *
 * Over 350 lines on purpose: one scanner whose methods share its cursor over the bytes.
 */

/** Why a body is not JSON: bad UTF-8, nesting past the limit, or a syntax error. */
export class JsonScanError extends Error {
  constructor(readonly kind: "utf8" | "depth" | "syntax", message: string) {
    super(message);
    this.name = "JsonScanError";
  }
}

/** The top object is level 0; `messages` level 1; each message level 2. */
const KEEP_CONTAINERS_TO = 2;
const KEPT_STRING_BYTES = 1024;
/** ASCII strings up to this long are built by hand rather than decoded (see #string). */
const SHORT_STRING_BYTES = 64;
/** Recursion guard whatever max_json_depth says (a deeper body is refused as too deep). */
const MAX_DEPTH = 1000;

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Validates `bytes` as one JSON text nested at most `maxDepth` deep and returns its skeleton.
 * @throws {JsonScanError}; when a body has several faults, the kind reported is the one
 * JSON.parse of TextDecoder'd text would meet first: bad UTF-8, then depth, then syntax.
 */
export function jsonSkeleton(bytes: Uint8Array, maxDepth: number): unknown {
  try {
    return new Scanner(bytes, Math.min(maxDepth, MAX_DEPTH)).document();
  } catch (err) {
    if (!(err instanceof JsonScanError) || err.kind === "utf8") throw err;
    // The scan stopped at its first fault; a fault further on may take precedence.
    const badUtf8 = firstInvalidUtf8(bytes);
    if (badUtf8 >= 0) {
      throw new JsonScanError("utf8", `invalid UTF-8 at byte ${badUtf8}`);
    }
    if (err.kind === "syntax" && jsonDepth(bytes, maxDepth) > maxDepth) {
      throw new JsonScanError("depth", `nests deeper than ${maxDepth} levels`);
    }
    throw err;
  }
}

class Scanner {
  #b: Uint8Array;
  #i = 0;
  #maxDepth: number;

  constructor(bytes: Uint8Array, maxDepth: number) {
    this.#b = bytes;
    this.#maxDepth = maxDepth;
    // TextDecoder drops a leading byte-order mark, so JSON.parse never saw one.
    if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) this.#i = 3;
  }

  document(): unknown {
    this.#ws();
    const value = this.#value(0);
    this.#ws();
    if (this.#i < this.#b.length) this.#fail("unexpected data after the JSON value");
    return value;
  }

  #fail(what: string): never {
    const at = this.#i;
    if (at < this.#b.length && this.#b[at] >= 0x80) {
      // A non-ASCII byte outside a string: say "bad UTF-8" when it is not even that.
      if (utf8Length(this.#b, at) === 0) {
        throw new JsonScanError("utf8", `invalid UTF-8 at byte ${at}`);
      }
    }
    const near = at < this.#b.length ? `'${String.fromCharCode(this.#b[at])}'` : "end of input";
    throw new JsonScanError("syntax", `${what} at position ${at} (${near})`);
  }

  #ws(): void {
    const b = this.#b;
    let i = this.#i;
    while (i < b.length) {
      const c = b[i];
      if (!isJsonSpace(c)) break;
      i++;
    }
    this.#i = i;
  }

  /** A value at nesting `level` (the top value is level 0). */
  #value(level: number): unknown {
    const c = this.#b[this.#i];
    if (c === 0x7b) return this.#object(level);
    if (c === 0x5b) return this.#array(level);
    const keep = level <= KEEP_CONTAINERS_TO + 1;
    if (c === 0x22) return this.#string(keep);
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return this.#number(keep);
    if (c === 0x74) return this.#literal("true", true);
    if (c === 0x66) return this.#literal("false", false);
    if (c === 0x6e) return this.#literal("null", null);
    this.#fail("expected a JSON value");
  }

  #enter(level: number): void {
    if (level + 1 > this.#maxDepth) {
      throw new JsonScanError("depth", `nests deeper than ${this.#maxDepth} levels`);
    }
  }

  /** Opens a container at `level`: true when it closes at once with `close` (empty). */
  #open(level: number, close: number): boolean {
    this.#enter(level);
    this.#i++;
    this.#ws();
    if (this.#b[this.#i] !== close) return false;
    this.#i++;
    return true;
  }

  /** After a member or element: true when `close` ends the container, false after a comma. */
  #closes(close: number): boolean {
    this.#ws();
    const c = this.#b[this.#i];
    if (c === 0x2c) {
      this.#i++;
      this.#ws();
      return false;
    }
    if (c !== close) this.#fail(`expected ',' or '${String.fromCharCode(close)}'`);
    this.#i++;
    return true;
  }

  #object(level: number): unknown {
    const keep = level <= KEEP_CONTAINERS_TO;
    const object: Record<string, unknown> = {};
    if (this.#open(level, 0x7d)) return object;
    do {
      if (this.#b[this.#i] !== 0x22) this.#fail("expected a property name");
      const key = this.#string(keep) as string;
      this.#ws();
      if (this.#b[this.#i] !== 0x3a) this.#fail("expected ':'");
      this.#i++;
      this.#ws();
      const value = this.#value(level + 1);
      if (keep) setMember(object, key, value);
    } while (!this.#closes(0x7d));
    return object;
  }

  #array(level: number): unknown {
    const keep = level <= KEEP_CONTAINERS_TO;
    const items: unknown[] = [];
    if (this.#open(level, 0x5d)) return items;
    do {
      const value = this.#value(level + 1);
      if (keep) items.push(value);
    } while (!this.#closes(0x5d));
    return items;
  }

  #string(keep: boolean): string {
    const b = this.#b;
    const start = this.#i;
    let i = start + 1;
    let escaped = false;
    let ascii = true;
    while (true) {
      if (i >= b.length) {
        this.#i = i;
        this.#fail("unterminated string");
      }
      const c = b[i];
      if (c === 0x22) break;
      if (c < 0x20) {
        this.#i = i;
        this.#fail("control character in a string");
      }
      if (c === 0x5c) {
        escaped = true;
        const e = b[i + 1];
        if (e === 0x75) {
          for (let k = 2; k < 6; k++) {
            if (!isHex(b[i + k])) {
              this.#i = i;
              this.#fail("bad \\u escape");
            }
          }
          i += 6;
        } else if (
          e === 0x22 || e === 0x5c || e === 0x2f || e === 0x62 || e === 0x66 || e === 0x6e ||
          e === 0x72 || e === 0x74
        ) {
          i += 2;
        } else {
          this.#i = i;
          this.#fail("bad escape");
        }
      } else if (c < 0x80) {
        i++;
      } else {
        const n = utf8Length(b, i);
        if (n === 0) throw new JsonScanError("utf8", `invalid UTF-8 at byte ${i}`);
        ascii = false;
        i += n;
      }
    }
    this.#i = i + 1;
    if (!keep || i - start - 1 > KEPT_STRING_BYTES) return "";
    if (ascii && !escaped && i - start - 1 <= SHORT_STRING_BYTES) {
      // Keys and short values ("model", "role", "user"): the decoder's call costs ~10x this.
      let text = "";
      for (let k = start + 1; k < i; k++) text += String.fromCharCode(b[k]);
      return text;
    }
    const text = utf8.decode(b.subarray(start + 1, i));
    return escaped ? JSON.parse(`"${text}"`) : text;
  }

  #number(keep: boolean): number {
    const b = this.#b;
    const start = this.#i;
    let i = start;
    if (b[i] === 0x2d) i++;
    if (b[i] === 0x30) i++;
    else if (b[i] >= 0x31 && b[i] <= 0x39) { while (isDigit(b[i])) i++; }
    else {
      this.#i = i;
      this.#fail("bad number");
    }
    if (b[i] === 0x2e) {
      i++;
      if (!isDigit(b[i])) {
        this.#i = i;
        this.#fail("bad number");
      }
      while (isDigit(b[i])) i++;
    }
    if (b[i] === 0x65 || b[i] === 0x45) {
      i++;
      if (b[i] === 0x2b || b[i] === 0x2d) i++;
      if (!isDigit(b[i])) {
        this.#i = i;
        this.#fail("bad number");
      }
      while (isDigit(b[i])) i++;
    }
    this.#i = i;
    if (!keep) return 0;
    return Number(String.fromCharCode(...b.subarray(start, Math.min(i, start + 64))));
  }

  #literal(word: string, value: boolean | null): boolean | null {
    for (let k = 0; k < word.length; k++) {
      if (this.#b[this.#i + k] !== word.charCodeAt(k)) this.#fail("expected a JSON value");
    }
    this.#i += word.length;
    return value;
  }
}

/**
 * `object[key] = value` as JSON.parse does it: an own data property, so a "__proto__" key stays
 * a plain key (assigning it would set the prototype), and a repeated key keeps its last value.
 * Assignment, not Object.fromEntries: fromEntries was nearly all of a small body's scan.
 */
function setMember(object: Record<string, unknown>, key: string, value: unknown): void {
  if (key === "__proto__") {
    Object.defineProperty(object, key, {
      value,
      writable: true,
      enumerable: true,
      configurable: true,
    });
  } else object[key] = value;
}

/** Whether byte `c` is an ASCII digit. */
export function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/** Whether byte `c` is JSON's whitespace (space, LF, CR, tab). */
export function isJsonSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

function isHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

const isCont = (c: number) => c >= 0x80 && c <= 0xbf;

/** Bytes of the well-formed UTF-8 sequence starting at `i` (a byte ≥ 0x80), or 0. */
function utf8Length(b: Uint8Array, i: number): number {
  const c = b[i];
  if (c >= 0xc2 && c <= 0xdf) return isCont(b[i + 1]) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    const c1 = b[i + 1];
    const ok1 = c === 0xe0 ? c1 >= 0xa0 && c1 <= 0xbf : c === 0xed
      ? c1 >= 0x80 && c1 <= 0x9f // no UTF-16 surrogates
      : isCont(c1);
    return ok1 && isCont(b[i + 2]) ? 3 : 0;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    const c1 = b[i + 1];
    const ok1 = c === 0xf0
      ? c1 >= 0x90 && c1 <= 0xbf
      : c === 0xf4
      ? c1 >= 0x80 && c1 <= 0x8f
      : isCont(c1);
    return ok1 && isCont(b[i + 2]) && isCont(b[i + 3]) ? 4 : 0;
  }
  return 0;
}

/** Offset of the first byte that is not well-formed UTF-8, or -1. */
function firstInvalidUtf8(b: Uint8Array): number {
  for (let i = 0; i < b.length;) {
    if (b[i] < 0x80) {
      i++;
      continue;
    }
    const n = utf8Length(b, i);
    if (n === 0) return i;
    i += n;
  }
  return -1;
}

/**
 * Depth of the deepest nesting in JSON text (a string or its UTF-8 bytes), stopping early past
 * `limit`. Brackets inside strings do not count. (Checked before forwarding: recursive JSON
 * parsers can crash.)
 */
export function jsonDepth(text: string | Uint8Array, limit: number): number {
  const codeAt = typeof text === "string"
    ? (i: number) => text.charCodeAt(i)
    : (i: number) => text[i];
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = codeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) max = depth;
      if (max > limit) return max;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return max;
}
