/**
 * @module
 * A logger that keeps every line it is given, for tests about what an operator reads.
 */
import type { LogFields, Logger } from "../../lib/log.ts";

export interface LogEntry {
  level: "INFO" | "WARN" | "ERROR";
  event: string;
  fields: LogFields;
}

export class CapturedLog implements Logger {
  readonly entries: LogEntry[] = [];
  info(event: string, fields: LogFields = {}): void {
    this.entries.push({ level: "INFO", event, fields });
  }
  warn(event: string, fields: LogFields = {}): void {
    this.entries.push({ level: "WARN", event, fields });
  }
  error(event: string, fields: LogFields = {}): void {
    this.entries.push({ level: "ERROR", event, fields });
  }
  /** Entries of one event, in order. */
  of(event: string): LogEntry[] {
    return this.entries.filter((e) => e.event === event);
  }
}
