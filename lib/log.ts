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

export function formatLine(level: string, event: string, fields: LogFields, now: Date): string {
  let line = `${now.toISOString()} ${level} ${event}`;
  // for…in, not Object.entries: no array of pairs per line (a request's line has 15 fields).
  for (const key in fields) {
    const value = fields[key];
    if (value !== undefined) line += ` ${key}=${formatValue(value)}`;
  }
  return line;
}

export function formatJsonLine(
  level: string,
  event: string,
  fields: LogFields,
  now: Date,
): string {
  return JSON.stringify({ time: now.toISOString(), level, event, ...fields });
}

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
    gathered += render("INFO", event, fields, new Date()) + "\n";
    if (gathered.length >= BATCH_MAX_CHARS) flush();
    else if (timer === null) {
      // node:timers' for unref(): gathered lines never keep a process alive (its end, "unload",
      // writes them); Deno.unrefTimer does not take the Timeout the global setTimeout returns.
      timer = setTimeout(flush, BATCH_MS).unref();
    }
  };
  const now = (level: string) => (event: string, fields: LogFields = {}) => {
    flush();
    writeAll(Deno.stderr, encoder.encode(render(level, event, fields, new Date()) + "\n"));
  };
  // None of these stops the default (exit, or the uncaught error's report): they only flush.
  for (const event of ["unload", "error", "unhandledrejection"]) {
    globalThis.addEventListener(event, flush);
  }
  return { info, warn: now("WARN"), error: now("ERROR"), flush };
}

/** A logger that drops everything; for tests that assert on behaviour, not output. */
export const silentLogger: Logger = { info() {}, warn() {}, error() {} };
