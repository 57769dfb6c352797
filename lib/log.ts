/**
 * @module
 * One line per event, plain text by default
 * (`2026-11-25T19:00:00.000Z INFO swap from=a to=b stop_ms=12`) or JSON lines for log
 * shippers (`{"time":…,"level":"INFO","event":"swap","from":"a",…}`).
 * Secrets never reach this module; callers pass only what may be printed.
 */

import { clearTimeout, setTimeout } from "node:timers";

export type LogFields = Record<string, string | number | boolean | null | undefined>;

export interface Logger {
  info(event: string, fields?: LogFields): void;
  warn(event: string, fields?: LogFields): void;
  error(event: string, fields?: LogFields): void;
}

function formatValue(value: string | number | boolean | null): string {
  // A number or boolean prints without spaces, quotes or '=': no pattern test for most fields.
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  const text = String(value);
  return /[\s"=]/.test(text) || text === "" ? JSON.stringify(text) : text;
}

/** Where isoTime()'s cached minute begins (ms since the epoch), and its "YYYY-MM-DDTHH:MM:". */
let minuteStart = NaN;
let minutePrefix = "";
/** Year 10000: from here on toISOString() writes six-digit years. */
const YEAR_10000 = 253_402_300_800_000;

/**
 * `new Date(ms).toISOString()` for a whole number of ms, formatting only the seconds and ms of
 * the minute it last saw: a Date and its toISOString() were ~7 us of a request line's ~14 in the
 * proxy (once per request, on cold code).
 */
export function isoTime(ms: number): string {
  if (!Number.isSafeInteger(ms) || ms < 0 || ms >= YEAR_10000) return new Date(ms).toISOString();
  let into = ms - minuteStart;
  if (!(into >= 0 && into < 60_000)) {
    into = ms % 60_000;
    minuteStart = ms - into;
    minutePrefix = new Date(minuteStart).toISOString().slice(0, 17);
  }
  const seconds = Math.floor(into / 1000);
  const milli = into % 1000;
  return `${minutePrefix}${seconds < 10 ? "0" : ""}${seconds}.${
    milli < 10 ? "00" : milli < 100 ? "0" : ""
  }${milli}Z`;
}

/** Renders one line; `now` is a Date, or ms since the epoch (the logger's own lines). */
type LineFormat = (level: string, event: string, fields: LogFields, now: Date | number) => string;

function timeOf(now: Date | number): string {
  return typeof now === "number" ? isoTime(now) : now.toISOString();
}

export const formatLine: LineFormat = (level, event, fields, now) => {
  let line = `${timeOf(now)} ${level} ${event}`;
  // for…in, not Object.entries: no array of pairs per line (a request's line has 15 fields).
  for (const key in fields) {
    const value = fields[key];
    if (value !== undefined) line += ` ${key}=${formatValue(value)}`;
  }
  return line;
};

export const formatJsonLine: LineFormat = (level, event, fields, now) =>
  JSON.stringify({ time: timeOf(now), level, event, ...fields });

export type LogFormat = "text" | "json";

/**
 * All of `bytes` to `to` (a pipe may take less than asked for in one write). A log line that
 * cannot be written (the reader of a pipe went away) is dropped: logging never fails a request.
 */
function writeAll(to: typeof Deno.stdout, bytes: Uint8Array): void {
  try {
    for (let at = 0; at < bytes.byteLength;) at += to.writeSync(bytes.subarray(at));
  } catch {
    // dropped
  }
}

/**
 * How long info lines gather before they go out in one write. One synchronous write per
 * request line was ~4% of the proxy's CPU at one request at a time; at ~1 request per ms this
 * makes it one write per ~10 lines. A line is at most this late on a terminal or in a file.
 */
const BATCH_MS = 10;
/** Written at once when this much gathered: a burst never holds much, nor blocks on a pipe long. */
const BATCH_MAX_CHARS = 16_384;

/** A logger whose info lines may still be gathering: `flush()` writes them now. */
export interface ConsoleLogger extends Logger {
  flush(): void;
}

/**
 * A logger writing to stdout (info) and stderr (warn, error). Straight to the file
 * descriptors: console.log's formatting machinery cost as much as the line itself.
 *
 * Info lines are gathered for up to BATCH_MS and written together, in order. Warnings and
 * errors are rare and are what an operator watches for (or what comes right before the process
 * dies), so they go out at once, after the info lines gathered before them: a reader of both
 * streams still sees them in the order they were logged. The gathered lines are written on
 * `flush()`, on exit (`Deno.exit` and the end of the event loop dispatch "unload") and on an
 * uncaught error; only a kill -9 loses them (at most BATCH_MS of lines; the job store, not the
 * log, is the durable record).
 */
export function consoleLogger(format: LogFormat = "text"): ConsoleLogger {
  const render = format === "json" ? formatJsonLine : formatLine;
  const encoder = new TextEncoder();
  let gathered = "";
  let timer: ReturnType<typeof setTimeout> | null = null;
  const flush = () => {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    if (gathered === "") return;
    const text = gathered;
    gathered = "";
    writeAll(Deno.stdout, encoder.encode(text));
  };
  const info = (event: string, fields: LogFields = {}) => {
    gathered += render("INFO", event, fields, Date.now()) + "\n";
    if (gathered.length >= BATCH_MAX_CHARS) flush();
    else if (timer === null) {
      // node:timers' for unref(): gathered lines never keep a process alive (its end, "unload",
      // writes them); Deno.unrefTimer does not take the Timeout the global setTimeout returns.
      timer = setTimeout(flush, BATCH_MS).unref();
    }
  };
  const now = (level: string) => (event: string, fields: LogFields = {}) => {
    flush();
    writeAll(Deno.stderr, encoder.encode(render(level, event, fields, Date.now()) + "\n"));
  };
  // None of these stops the default (exit, or the uncaught error's report): they only flush.
  for (const event of ["unload", "error", "unhandledrejection"]) {
    globalThis.addEventListener(event, flush);
  }
  return { info, warn: now("WARN"), error: now("ERROR"), flush };
}

/** A logger that drops everything; for tests that assert on behaviour, not output. */
export const silentLogger: Logger = { info() {}, warn() {}, error() {} };
