/**
 * @module
 * One line per event, plain text by default
 * (`2026-11-25T19:00:00.000Z INFO swap from=a to=b stop_ms=12`) or JSON lines for log
 * shippers (`{"time":…,"level":"INFO","event":"swap","from":"a",…}`).
 * Secrets never reach this module; callers pass only what may be printed.
 */

export type LogFields = Record<string, string | number | boolean | null | undefined>;

export interface Logger {
  info(event: string, fields?: LogFields): void;
  warn(event: string, fields?: LogFields): void;
  error(event: string, fields?: LogFields): void;
}

function formatValue(value: string | number | boolean | null): string {
  const text = String(value);
  return /[\s"=]/.test(text) || text === "" ? JSON.stringify(text) : text;
}

export function formatLine(level: string, event: string, fields: LogFields, now: Date): string {
  const parts = [now.toISOString(), level, event];
  for (const [key, value] of Object.entries(fields)) {
    if (value !== undefined) parts.push(`${key}=${formatValue(value)}`);
  }
  return parts.join(" ");
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
 * A logger writing to stdout (info) and stderr (warn, error). Straight to the file
 * descriptors: console.log's formatting machinery cost as much as the line itself.
 */
export function consoleLogger(format: LogFormat = "text"): Logger {
  const render = format === "json" ? formatJsonLine : formatLine;
  const encoder = new TextEncoder();
  const write = (level: string, event: string, fields: LogFields = {}) => {
    const line = encoder.encode(render(level, event, fields, new Date()) + "\n");
    writeAll(level === "INFO" ? Deno.stdout : Deno.stderr, line);
  };
  return {
    info: (event, fields) => write("INFO", event, fields),
    warn: (event, fields) => write("WARN", event, fields),
    error: (event, fields) => write("ERROR", event, fields),
  };
}

/** A logger that drops everything; for tests that assert on behaviour, not output. */
export const silentLogger: Logger = { info() {}, warn() {}, error() {} };
