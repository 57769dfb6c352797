/**
 * @module
 * Reading a client's body once, within `max_body_size`, and reading the two fields the proxy
 * acts on (`model`, `stream`). The bytes themselves are forwarded untouched.
 */
import { bodyTooLarge, invalidRequest } from "./errors.ts";
import { jsonDepth } from "./request_checks.ts";
import { PRIORITIES, type Priority } from "./scheduler.ts";

/**
 * Reads the whole body, stopping as soon as it passes `limit` bytes.
 * @throws {ApiError} 413 when the body is larger than `limit`.
 */
export async function readBody(req: Request, limit: number): Promise<Uint8Array<ArrayBuffer>> {
  const declared = Number(req.headers.get("content-length") ?? NaN);
  if (declared > limit) {
    await req.body?.cancel();
    throw bodyTooLarge(limit);
  }
  if (req.body === null) return new Uint8Array(0);
  // A declared length within the limit can be read natively in one go.
  if (Number.isFinite(declared)) return new Uint8Array(await req.arrayBuffer());
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of req.body) {
    total += chunk.byteLength;
    if (total > limit) throw bodyTooLarge(limit);
    chunks.push(chunk);
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

export interface RoutingFields {
  model: string;
  stream: boolean;
  /** The whole parsed body, for `checkRequestBody()` once the model is known. */
  json: Record<string, unknown>;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Parses a body that must be one JSON object.
 * @throws {ApiError} 400 for a body that is empty, not UTF-8 JSON, nests too deep or is not
 * an object.
 */
export function parseJsonObject(bytes: Uint8Array, maxJsonDepth: number): Record<string, unknown> {
  if (bytes.byteLength === 0) {
    throw invalidRequest("invalid_body", "Request body is empty; expected a JSON object");
  }
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw invalidRequest("invalid_body", "Request body is not valid UTF-8");
  }
  if (jsonDepth(text, maxJsonDepth) > maxJsonDepth) {
    throw invalidRequest(
      "invalid_body",
      `Request body nests deeper than ${maxJsonDepth} levels (max_json_depth)`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw invalidRequest(
      "invalid_json",
      `Request body is not valid JSON: ${err instanceof Error ? err.message : err}`,
    );
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw invalidRequest("invalid_body", "Request body must be a JSON object");
  }
  return parsed as Record<string, unknown>;
}

/**
 * Parses the JSON body just far enough to route it.
 * @throws {ApiError} 400 for a body that is not a JSON object (see `parseJsonObject`) or names
 * no model.
 */
export function parseRoutingFields(bytes: Uint8Array, maxJsonDepth: number): RoutingFields {
  const json = parseJsonObject(bytes, maxJsonDepth);
  const { model, stream } = json;
  if (typeof model !== "string" || model.trim() === "") {
    throw invalidRequest("missing_model", "You must provide a model parameter", "model");
  }
  return { model, stream: stream === true, json };
}

/** The header a client sets to pick its priority class. */
export const PRIORITY_HEADER = "x-priority";

/**
 * The priority class a request asks for with `X-Priority: interactive|batch`, or null.
 * @throws {ApiError} 400 for any other value.
 */
export function readPriority(headers: Headers): Priority | null {
  const value = headers.get(PRIORITY_HEADER)?.trim().toLowerCase();
  if (value === undefined || value === "") return null;
  const priority = PRIORITIES.find((p) => p === value);
  if (priority === undefined) {
    throw invalidRequest(
      "invalid_priority",
      `Header X-Priority must be one of ${PRIORITIES.join(", ")}; got '${value}'`,
    );
  }
  return priority;
}

/** A request may lower its key's class (interactive → batch), never raise it. */
export function effectivePriority(keyClass: Priority, requested: Priority | null): Priority {
  return keyClass === "batch" || requested === "batch" ? "batch" : "interactive";
}
