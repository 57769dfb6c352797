/**
 * @module
 * What the proxy checks in a request body before queueing it, so a malformed request gets a
 * clear 400 at once instead of a backend's 500 (or a backend crash) after a model swap.
 * Only the fields the OpenAI routes require and the types of common parameters are checked;
 * everything else passes through untouched.
 */
import { z } from "zod";
import { invalidRequest } from "./errors.ts";

export interface RequestLimits {
  /** Most chat messages accepted in one request. */
  maxMessages: number;
}

const count = z.int().min(0);

const Common = z.looseObject({
  stream: z.boolean().optional(),
  max_tokens: count.nullable().optional(),
  max_completion_tokens: count.nullable().optional(),
  n: z.int().min(1).optional(),
  temperature: z.number().optional(),
  top_p: z.number().optional(),
});

const textOrList = z.union([z.string(), z.array(z.unknown())], {
  error: "expected a string or an array",
});

/** Required fields per route; other routes get only the common checks. */
const BY_PATH: Record<string, z.ZodType> = {
  "/v1/chat/completions": Common.extend({
    messages: z.array(z.looseObject({ role: z.string() }), {
      error: "expected an array of messages",
    }).min(1, "expected at least one message"),
  }),
  "/v1/completions": Common.extend({ prompt: textOrList }),
  "/v1/embeddings": Common.extend({ input: textOrList }),
};

/** A count (`count` above): a safe integer, at least `min`. */
const isCount = (value: unknown, min: number) =>
  typeof value === "number" && Number.isSafeInteger(value) && value >= min;
/** A number z.number() takes: finite. */
const isNumber = (value: unknown) => typeof value === "number" && Number.isFinite(value);
const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

/**
 * True only where the schema for `path` surely accepts `body`: the usual well-formed request,
 * checked by hand. zod's parse, which runs for anything else (and words the 400), touched so
 * much code once per request that it cost ~10x its hot-loop time in the proxy (1.4% of CPU).
 * A false here only means "ask zod".
 */
function plainlyValid(path: string, body: Record<string, unknown>): boolean {
  const { stream, max_tokens, max_completion_tokens, n, temperature, top_p } = body;
  if (stream !== undefined && typeof stream !== "boolean") return false;
  if (max_tokens !== undefined && max_tokens !== null && !isCount(max_tokens, 0)) return false;
  if (
    max_completion_tokens !== undefined && max_completion_tokens !== null &&
    !isCount(max_completion_tokens, 0)
  ) return false;
  if (n !== undefined && !isCount(n, 1)) return false;
  if (temperature !== undefined && !isNumber(temperature)) return false;
  if (top_p !== undefined && !isNumber(top_p)) return false;
  switch (path) {
    case "/v1/chat/completions": {
      const messages = body.messages;
      if (!Array.isArray(messages) || messages.length === 0) return false;
      return messages.every((m) => isObject(m) && typeof m.role === "string");
    }
    case "/v1/completions":
      return typeof body.prompt === "string" || Array.isArray(body.prompt);
    case "/v1/embeddings":
      return typeof body.input === "string" || Array.isArray(body.input);
    default:
      // A route given a schema above but not a case here goes to zod.
      return !Object.hasOwn(BY_PATH, path);
  }
}

/**
 * Checks a parsed body for `path` (e.g. `/v1/chat/completions`).
 * @throws {ApiError} 400 naming the first offending parameter.
 */
export function checkRequestBody(
  path: string,
  body: Record<string, unknown>,
  limits: RequestLimits,
): void {
  const result = plainlyValid(path, body) ? null : (BY_PATH[path] ?? Common).safeParse(body);
  if (result !== null && !result.success) {
    const issue = result.error.issues[0];
    const param = issue.path.map(String).join(".") || null;
    const missing = issue.path.length === 1 && body[String(issue.path[0])] === undefined;
    throw invalidRequest(
      missing
        ? "missing_required_parameter"
        : issue.code === "invalid_type"
        ? "invalid_type"
        : "invalid_value",
      missing ? `Missing required parameter: '${param}'` : `Invalid '${param}': ${issue.message}`,
      param,
    );
  }
  const messages = body.messages;
  if (Array.isArray(messages) && messages.length > limits.maxMessages) {
    throw invalidRequest(
      "too_many_messages",
      `Too many messages: ${messages.length} (the limit is ${limits.maxMessages}, max_messages)`,
      "messages",
    );
  }
}
