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

/** A logger writing to stdout (info) and stderr (warn, error). */
export function consoleLogger(format: LogFormat = "text"): Logger {
  const render = format === "json" ? formatJsonLine : formatLine;
  const write = (level: string, event: string, fields: LogFields = {}) => {
    const line = render(level, event, fields, new Date());
    if (level === "INFO") console.log(line);
    else console.error(line);
  };
  return {
    info: (event, fields) => write("INFO", event, fields),
    warn: (event, fields) => write("WARN", event, fields),
    error: (event, fields) => write("ERROR", event, fields),
  };
}

/** A logger that drops everything; for tests that assert on behaviour, not output. */
export const silentLogger: Logger = { info() {}, warn() {}, error() {} };
