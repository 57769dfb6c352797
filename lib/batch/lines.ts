/**
 * @module
 * The OpenAI batch file format, both ways: input JSONL checked line by line (every problem
 * reported with its line number, nothing half-accepted), and output lines in OpenAI's shape
 * (`custom_id`, `response.status_code`, `response.body`, `error`). Pure functions.
 */
import { ApiError, invalidRequest, type LineError } from "../errors.ts";
import { checkRequestBody } from "../request_checks.ts";
import { jsonDepth } from "../json_scan.ts";

/** Endpoints a batch may target (what the proxy serves with a `model` field). */
export const BATCH_ENDPOINTS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];

/** Problems listed in one error message; the count says how many there were in all. */
const SHOWN_PROBLEMS = 20;

export interface BatchLine {
  customId: string;
  url: string;
  /** The configured model id the line's `model` resolves to. */
  model: string;
  body: Record<string, unknown>;
}

export interface LineRules {
  maxLines: number;
  maxMessages: number;
  maxJsonDepth: number;
  /** The configured model id for a name or alias, or null. */
  resolveModel(name: string): string | null;
}

/**
 * Parses and checks a batch input file.
 * @throws {ApiError} 400 `invalid_batch_file` listing the problems with line numbers.
 */
export function parseBatchFile(bytes: Uint8Array, rules: LineRules): BatchLine[] {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw invalidRequest("invalid_batch_file", "The file is not valid UTF-8 text", "file");
  }
  const problems: string[] = [];
  const lines: BatchLine[] = [];
  const seen = new Map<string, number>();
  const rows = text.split("\n");
  rows.forEach((row, index) => {
    const number = index + 1;
    if (row.trim() === "") return;
    if (lines.length + problems.length >= rules.maxLines) {
      if (lines.length + problems.length === rules.maxLines) {
        problems.push(`more than ${rules.maxLines} requests (batch.max_lines)`);
      }
      return;
    }
    const problem = (message: string) => problems.push(`line ${number}: ${message}`);
    if (jsonDepth(row, rules.maxJsonDepth) > rules.maxJsonDepth) {
      return problem(`nested deeper than ${rules.maxJsonDepth} levels`);
    }
    let item: unknown;
    try {
      item = JSON.parse(row);
    } catch (err) {
      return problem(`not valid JSON (${(err as Error).message})`);
    }
    if (typeof item !== "object" || item === null || Array.isArray(item)) {
      return problem("expected a JSON object");
    }
    const { custom_id: customId, method, url, body } = item as Record<string, unknown>;
    if (typeof customId !== "string" || customId === "") {
      return problem("custom_id must be a non-empty string");
    }
    const earlier = seen.get(customId);
    if (earlier !== undefined) {
      return problem(`custom_id '${customId}' is already used on line ${earlier}`);
    }
    seen.set(customId, number);
    if (method !== "POST") return problem(`method must be "POST"`);
    if (typeof url !== "string" || !BATCH_ENDPOINTS.includes(url)) {
      return problem(`url must be one of ${BATCH_ENDPOINTS.join(", ")}`);
    }
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      return problem("body must be a JSON object");
    }
    const fields = body as Record<string, unknown>;
    if (typeof fields.model !== "string") return problem("body.model must be a string");
    const model = rules.resolveModel(fields.model);
    if (model === null) return problem(`unknown model '${fields.model}'`);
    if (fields.stream === true) return problem("body.stream is not supported in a batch");
    try {
      checkRequestBody(url, fields, { maxMessages: rules.maxMessages });
    } catch (err) {
      if (err instanceof ApiError) return problem(err.message);
      throw err;
    }
    lines.push({ customId, url, model, body: fields });
  });
  if (lines.length === 0 && problems.length === 0) problems.push("the file has no requests");
  if (problems.length > 0) {
    const shown = problems.slice(0, SHOWN_PROBLEMS).join("; ");
    const more = problems.length > SHOWN_PROBLEMS
      ? ` (and ${problems.length - SHOWN_PROBLEMS} more)`
      : "";
    throw invalidRequest(
      "invalid_batch_file",
      `The batch file has ${problems.length} problem(s): ${shown}${more}`,
      "file",
    );
  }
  return lines;
}

/** What a batch line's job record carries (its `payload`, as JSON). */
export interface LinePayload {
  custom_id: string;
  url: string;
  body: Record<string, unknown>;
}

/** What a line's request came back with, as the output file shows it. */
export interface LineResult {
  customId: string;
  response: { statusCode: number; requestId: string; body: unknown } | null;
  error: LineError | null;
}

export function outputLine(lineId: string, result: LineResult): string {
  return JSON.stringify({
    id: lineId,
    custom_id: result.customId,
    response: result.response === null ? null : {
      status_code: result.response.statusCode,
      request_id: result.response.requestId,
      body: result.response.body,
    },
    error: result.error,
  });
}

/** A backend's answer body as JSON when it is JSON, else as text. */
export function answerBody(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
