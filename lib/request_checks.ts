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

/**
 * Checks a parsed body for `path` (e.g. `/v1/chat/completions`).
 * @throws {ApiError} 400 naming the first offending parameter.
 */
export function checkRequestBody(
  path: string,
  body: Record<string, unknown>,
  limits: RequestLimits,
): void {
  const schema = BY_PATH[path] ?? Common;
  const result = schema.safeParse(body);
  if (!result.success) {
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
