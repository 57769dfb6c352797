/**
 * @module
 * The one error type of the proxy and the only place that knows the OpenAI error shape
 * `{"error":{"message","type","param","code"}}`. Routes throw; `routes/app.ts` renders.
 */

export type OpenAIErrorType =
  | "invalid_request_error"
  | "not_found_error"
  | "rate_limit_error"
  | "server_error"
  | "timeout_error"
  | "unavailable_error";

export interface ApiErrorOptions {
  param?: string | null;
  headers?: Record<string, string>;
  cause?: unknown;
}

/** An error a client sees: HTTP status, OpenAI `type` and `code`, and a message. */
export class ApiError extends Error {
  readonly param: string | null;
  readonly headers: Record<string, string>;

  constructor(
    readonly status: number,
    readonly type: OpenAIErrorType,
    readonly code: string,
    message: string,
    options: ApiErrorOptions = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "ApiError";
    this.param = options.param ?? null;
    this.headers = options.headers ?? {};
  }

  /** The OpenAI error body. */
  toJSON(): { error: { message: string; type: string; param: string | null; code: string } } {
    return {
      error: { message: this.message, type: this.type, param: this.param, code: this.code },
    };
  }

  /** A complete JSON response carrying this error. */
  toResponse(): Response {
    return new Response(JSON.stringify(this.toJSON()), {
      status: this.status,
      headers: { "content-type": "application/json", ...this.headers },
    });
  }
}

export function invalidRequest(code: string, message: string, param: string | null = null) {
  return new ApiError(400, "invalid_request_error", code, message, { param });
}

export function invalidApiKey() {
  return new ApiError(
    401,
    "invalid_request_error",
    "invalid_api_key",
    "Invalid or missing API key: send Authorization: Bearer <key>",
  );
}

export function modelNotFound(requested: string, valid: readonly string[]) {
  return new ApiError(
    404,
    "invalid_request_error",
    "model_not_found",
    `The model '${requested}' does not exist. Valid models: ${valid.join(", ")}`,
    { param: "model" },
  );
}

/** A reload was asked for, but the file is not valid; the config in force stays. */
export function invalidConfig(problems: readonly string[]) {
  return new ApiError(
    400,
    "invalid_request_error",
    "invalid_config",
    `The config file was not reloaded; the config in force stays. Problems:\n${
      problems.map((p) => `  - ${p}`).join("\n")
    }`,
  );
}

/** A config reload removed the model a request was waiting for. */
export function modelRemoved(model: string) {
  return new ApiError(
    404,
    "invalid_request_error",
    "model_not_found",
    `The model '${model}' was removed from the config while this request waited`,
    { param: "model" },
  );
}

/** A 429 that says when to come back. */
function rateLimited(code: string, message: string, retryAfterS: number) {
  return new ApiError(429, "rate_limit_error", code, message, {
    headers: { "retry-after": String(retryAfterS) },
  });
}

export function queueFull(capacity: number, retryAfterS: number) {
  return rateLimited(
    "queue_full",
    `Queue full (${capacity} requests). Try again later.`,
    retryAfterS,
  );
}

export function queueShareFull(
  owner: string,
  share: number,
  capacity: number,
  retryAfterS: number,
) {
  return rateLimited(
    "queue_share_exceeded",
    `Key '${owner}' already holds ${share} of the ${capacity} queue places (max_queue_share). Try again later.`,
    retryAfterS,
  );
}

const mb = (bytes: number) => `${Math.round(bytes / 1024 / 1024)} MB`;

/** Request bodies held here (read, waiting, in flight) would pass `max_queued_bytes`. */
export function queuedBytesFull(limitBytes: number, retryAfterS: number) {
  return rateLimited(
    "queue_bytes_full",
    `Requests waiting here already hold ${
      mb(limitBytes)
    } of request bodies (max_queued_bytes). Try again later.`,
    retryAfterS,
  );
}

/** One key's bodies would pass its share of `max_queued_bytes`. */
export function queuedBytesShareFull(owner: string, shareBytes: number, retryAfterS: number) {
  return rateLimited(
    "queue_share_exceeded",
    `Key '${owner}' already holds ${
      mb(shareBytes)
    } of request bodies, its share of max_queued_bytes (max_queue_share). Try again later.`,
    retryAfterS,
  );
}

/** The connection broke or timed out before the whole body arrived. */
export function incompleteBody(reason: string) {
  return new ApiError(
    400,
    "invalid_request_error",
    "incomplete_body",
    `The request body did not arrive whole: ${reason}`,
  );
}

/** A client too slow to send its request (header_timeout, body_timeout). */
export function clientTooSlow(headerTimeoutS: number, bodyTimeoutS: number) {
  return new ApiError(
    408,
    "invalid_request_error",
    "request_timeout",
    `The request did not arrive in time (header_timeout ${headerTimeoutS}s, body_timeout ${bodyTimeoutS}s)`,
  );
}

/** Past `max_connections`: only health checks are answered. */
export function tooManyConnections(max: number) {
  return new ApiError(
    503,
    "unavailable_error",
    "too_many_connections",
    `The proxy holds its maximum of ${max} connections (max_connections); try again shortly`,
    { headers: { "retry-after": "1" } },
  );
}

/** A request the HTTP parser could not read. */
export function malformedHttp(status: 400 | 431, detail: string) {
  return new ApiError(
    status,
    "invalid_request_error",
    status === 431 ? "headers_too_large" : "bad_request",
    detail,
  );
}

export function bodyTooLarge(limitBytes: number) {
  return new ApiError(
    413,
    "invalid_request_error",
    "request_too_large",
    `Request body is larger than the limit of ${limitBytes} bytes (max_body_size)`,
  );
}

export function unsupportedMediaType(contentType: string) {
  return new ApiError(
    415,
    "invalid_request_error",
    "unsupported_media_type",
    `Expected a JSON body, got ${contentType.split(";")[0]}`,
  );
}

export function requestTimeout(timeoutS: number) {
  return new ApiError(
    504,
    "timeout_error",
    "request_timeout",
    `Request did not complete within request_timeout (${timeoutS}s)`,
  );
}

export function modelUnavailable(code: string, message: string, cause?: unknown) {
  return new ApiError(503, "unavailable_error", code, message, { cause });
}

export function upstreamFailed(message: string, cause?: unknown) {
  return new ApiError(502, "server_error", "upstream_unreachable", message, { cause });
}

/** Nobody reads this one: the client is gone. It keeps the outcome type total. */
export function clientClosed() {
  return new ApiError(
    499,
    "invalid_request_error",
    "client_closed_request",
    "Client closed the request",
  );
}

export function cancelledByAdmin() {
  return new ApiError(
    503,
    "unavailable_error",
    "cancelled_by_admin",
    "The request was cancelled by an operator",
  );
}

export function adminRequired(configured: boolean) {
  return configured
    ? new ApiError(
      401,
      "invalid_request_error",
      "invalid_admin_key",
      "Invalid or missing admin key",
    )
    : new ApiError(
      403,
      "invalid_request_error",
      "admin_disabled",
      "Admin endpoints are disabled: set admin_key in config.yml",
    );
}

export function shuttingDown() {
  return new ApiError(503, "unavailable_error", "shutting_down", "The proxy is shutting down");
}

/** The job store cannot be reached (Redis down): nothing can be accepted durably. */
export function storeUnavailable(reason: string) {
  return new ApiError(
    503,
    "unavailable_error",
    "store_unavailable",
    `${reason}. The request was not accepted; retry in a few seconds`,
    { headers: { "retry-after": "5" } },
  );
}

/** Wraps anything thrown into an ApiError; unexpected errors become a generic 500. */
export function toApiError(err: unknown, requestId: string): ApiError {
  if (err instanceof ApiError) return err;
  return new ApiError(
    500,
    "server_error",
    "internal_error",
    `Internal proxy error (request ${requestId}); see the proxy log`,
    { cause: err },
  );
}

/** An error's message, or the thrown value as text. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
