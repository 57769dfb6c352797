/**
 * @module
 * The one error type of the proxy, the catalogue of every error `code` it sends, and the only
 * place that knows the OpenAI error shape `{"error":{"message","type","param","code"}}`.
 * Routes throw; `routes/app.ts` renders. docs/api.md's error table is tested against the
 * catalogue.
 *
 * Over 350 lines on purpose: one factory per error, so that every message a client can read
 * is in this one file.
 */

export type OpenAIErrorType =
  | "invalid_request_error"
  | "not_found_error"
  | "rate_limit_error"
  | "server_error"
  | "timeout_error"
  | "unavailable_error";

/**
 * The OpenAI `type` a code is sent with, per HTTP status. Two codes have no status of their
 * own: `backend` means the status is the backend's (`upstream_error`, sent as the last SSE
 * event of a stream already answered 200), `none` that the code only appears in a batch's
 * error file, whose lines carry a code and a message but no status or type.
 */
interface ErrorSpec {
  readonly [status: number]: OpenAIErrorType;
  readonly backend?: OpenAIErrorType;
  readonly none?: null;
}

const INVALID = "invalid_request_error";
const NOT_FOUND = "not_found_error";
const RATE_LIMIT = "rate_limit_error";
const SERVER = "server_error";
const UNAVAILABLE = "unavailable_error";

/** Every code the proxy can put in an error body, with its status(es) and type. */
export const ERROR_CATALOGUE = {
  bad_request: { 400: INVALID },
  file_too_large: { 400: INVALID },
  incomplete_body: { 400: INVALID },
  invalid_batch_file: { 400: INVALID },
  invalid_body: { 400: INVALID },
  invalid_config: { 400: INVALID },
  invalid_json: { 400: INVALID },
  invalid_multipart: { 400: INVALID },
  invalid_priority: { 400: INVALID },
  invalid_purpose: { 400: INVALID },
  invalid_state: { 400: INVALID },
  invalid_type: { 400: INVALID },
  invalid_value: { 400: INVALID },
  missing_model: { 400: INVALID },
  missing_required_parameter: { 400: INVALID },
  too_many_messages: { 400: INVALID },
  invalid_api_key: { 401: INVALID },
  invalid_admin_key: { 401: INVALID },
  admin_disabled: { 403: INVALID },
  invalid_hop: { 403: INVALID },
  model_not_found: { 404: INVALID },
  not_found: { 404: NOT_FOUND },
  file_not_found: { 404: NOT_FOUND },
  batch_not_found: { 404: NOT_FOUND },
  job_not_found: { 404: NOT_FOUND },
  // 408: the client was too slow to send its request; 504: the answer took too long.
  request_timeout: { 408: INVALID, 504: "timeout_error" },
  reload_unavailable: { 409: INVALID },
  batch_cancelled: { 409: INVALID },
  request_too_large: { 413: INVALID },
  unsupported_media_type: { 415: INVALID },
  queue_full: { 429: RATE_LIMIT },
  queue_bytes_full: { 429: RATE_LIMIT },
  queue_share_exceeded: { 429: RATE_LIMIT },
  headers_too_large: { 431: INVALID },
  client_closed_request: { 499: INVALID },
  not_implemented: { 501: INVALID },
  internal_error: { 500: SERVER },
  upstream_unreachable: { 502: SERVER },
  upstream_stream_broken: { 502: SERVER },
  peer_failed: { 502: SERVER },
  too_many_connections: { 503: UNAVAILABLE },
  container_not_found: { 503: UNAVAILABLE },
  docker_unavailable: { 503: UNAVAILABLE },
  model_load_failed: { 503: UNAVAILABLE },
  cancelled_by_admin: { 503: UNAVAILABLE },
  shutting_down: { 503: UNAVAILABLE },
  store_unavailable: { 503: UNAVAILABLE },
  peer_unreachable: { 503: UNAVAILABLE },
  upstream_error: { backend: SERVER },
  max_attempts_exceeded: { none: null },
} as const satisfies Record<string, ErrorSpec>;

type Catalogue = typeof ERROR_CATALOGUE;

export type ErrorCode = keyof Catalogue;

/** The HTTP statuses `code` may be sent with: any for the backend's, none for `none`. */
export type StatusOf<C extends ErrorCode> = C extends unknown
  ? "backend" extends keyof Catalogue[C] ? number : Extract<keyof Catalogue[C], number>
  : never;

/** Codes sent as a 400. */
export type InvalidRequestCode = {
  [C in ErrorCode]: 400 extends keyof Catalogue[C] ? C : never;
}[ErrorCode];

/** The OpenAI type `code` is sent with at `status`. */
function typeOf(code: ErrorCode, status: number): OpenAIErrorType {
  const spec: ErrorSpec = ERROR_CATALOGUE[code];
  // StatusOf lets only upstream_error's status fall outside its spec's own statuses.
  return spec[status] ?? spec.backend!;
}

export interface ApiErrorOptions {
  param?: string | null;
  headers?: Record<string, string>;
  cause?: unknown;
}

/** An error a client sees: HTTP status, OpenAI `type` and `code`, and a message. */
export class ApiError<C extends ErrorCode = ErrorCode> extends Error {
  readonly status: number;
  readonly type: OpenAIErrorType;
  readonly param: string | null;
  readonly headers: Record<string, string>;

  constructor(
    status: StatusOf<C>,
    readonly code: C,
    message: string,
    options: ApiErrorOptions = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "ApiError";
    this.status = status;
    this.type = typeOf(code, status);
    this.param = options.param ?? null;
    this.headers = options.headers ?? {};
  }

  /** The OpenAI error body. */
  toJSON(): { error: { message: string; type: string; param: string | null; code: C } } {
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

/** A failed line in a batch's error file: a code and a message, no status. */
export interface LineError {
  code: ErrorCode;
  message: string;
}

/** The error a batch line records for the error its request ended with. */
export function lineError(error: ApiError): LineError {
  return { code: error.code, message: error.message };
}

export function invalidRequest(
  code: InvalidRequestCode,
  message: string,
  param: string | null = null,
) {
  return new ApiError(400, code, message, { param });
}

export function invalidApiKey() {
  return new ApiError(
    401,
    "invalid_api_key",
    "Invalid or missing API key: send Authorization: Bearer <key>",
  );
}

/** A forwarded-request header that does not verify: forged, stale, or another cluster's. */
export function invalidHop() {
  return new ApiError(
    403,
    "invalid_hop",
    "The x-lqp-hop header does not verify: only nodes sharing this cluster's secret may send it",
  );
}

/** The node a request was forwarded to took it and went away before answering. */
export function peerFailed(node: string) {
  return new ApiError(
    502,
    "peer_failed",
    `Node '${node}' took the request and went away before it answered; it may have run part ` +
      `of it, so it was not sent elsewhere`,
  );
}

/** The model is only served by peers, and none of them answered. */
export function peerUnreachable(model: string, nodes: readonly string[]) {
  return new ApiError(
    503,
    "peer_unreachable",
    `Model '${model}' is served by ${nodes.join(", ")}, which did not answer`,
    { headers: { "retry-after": "5" } },
  );
}

export function modelNotFound(requested: string, valid: readonly string[]) {
  return new ApiError(
    404,
    "model_not_found",
    `The model '${requested}' does not exist. Valid models: ${valid.join(", ")}`,
    { param: "model" },
  );
}

/** A path no route serves. */
export function routeNotFound(method: string, path: string) {
  return new ApiError(404, "not_found", `No route for ${method} ${path}`);
}

/** An unknown file or batch id. */
export function resourceNotFound(what: "file" | "batch", id: string) {
  return new ApiError(404, `${what}_not_found`, `No ${what} with id '${id}'`);
}

/** No waiting request has the id an operator asked to cancel. */
export function jobNotFound() {
  return new ApiError(404, "job_not_found", "No waiting request with that id");
}

/** A reload was asked for, but the file is not valid; the config in force stays. */
export function invalidConfig(problems: readonly string[]) {
  return new ApiError(
    400,
    "invalid_config",
    `The config file was not reloaded; the config in force stays. Problems:\n${
      problems.map((p) => `  - ${p}`).join("\n")
    }`,
  );
}

/** A reload was asked of a proxy started without a config file. */
export function reloadUnavailable() {
  return new ApiError(
    409,
    "reload_unavailable",
    "This proxy was started without a config file, so there is nothing to reload",
  );
}

/** A config reload removed the model a request was waiting for. */
export function modelRemoved(model: string) {
  return new ApiError(
    404,
    "model_not_found",
    `The model '${model}' was removed from the config while this request waited`,
    { param: "model" },
  );
}

/** A 429 that says when to come back. */
function rateLimited(
  code: "queue_full" | "queue_bytes_full" | "queue_share_exceeded",
  message: string,
  retryAfterS: number,
) {
  return new ApiError(429, code, message, { headers: { "retry-after": String(retryAfterS) } });
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

/** Request bodies held here (read, waiting, being sent) would pass `max_queued_bytes`. */
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
  return new ApiError(400, "incomplete_body", `The request body did not arrive whole: ${reason}`);
}

/** A client too slow to send its request (header_timeout, body_timeout). */
export function clientTooSlow(headerTimeoutS: number, bodyTimeoutS: number) {
  return new ApiError(
    408,
    "request_timeout",
    `The request did not arrive in time (header_timeout ${headerTimeoutS}s, body_timeout ${bodyTimeoutS}s)`,
  );
}

/** Past `max_connections`: only health checks are answered. */
export function tooManyConnections(max: number) {
  return new ApiError(
    503,
    "too_many_connections",
    `The proxy holds its maximum of ${max} connections (max_connections); try again shortly`,
    { headers: { "retry-after": "1" } },
  );
}

/** A request the HTTP parser could not read. */
export function malformedHttp(status: 400 | 431 | 501, detail: string) {
  if (status === 431) return new ApiError(431, "headers_too_large", detail);
  if (status === 501) return new ApiError(501, "not_implemented", detail);
  return new ApiError(400, "bad_request", detail);
}

export function bodyTooLarge(limitBytes: number) {
  return new ApiError(
    413,
    "request_too_large",
    `Request body is larger than the limit of ${limitBytes} bytes (max_body_size)`,
  );
}

export function unsupportedMediaType(contentType: string) {
  return new ApiError(
    415,
    "unsupported_media_type",
    `Expected a JSON body, got ${contentType.split(";")[0]}`,
  );
}

export function requestTimeout(timeoutS: number) {
  return new ApiError(
    504,
    "request_timeout",
    `Request did not complete within request_timeout (${timeoutS}s)`,
  );
}

/** Why a model could not be loaded: its container is missing, Docker is down, or it failed. */
export type SwapFailureCode = "container_not_found" | "docker_unavailable" | "model_load_failed";

/** The model a request waits for could not be loaded. */
export function modelUnavailable(code: SwapFailureCode, message: string, cause: unknown) {
  return new ApiError(503, code, message, { cause });
}

export function upstreamFailed(message: string, cause?: unknown) {
  return new ApiError(502, "upstream_unreachable", message, { cause });
}

/** The backend's stream broke after the client had part of the answer. */
export function upstreamStreamBroken(reason: string) {
  return new ApiError(
    502,
    "upstream_stream_broken",
    `The backend stream ended unexpectedly: ${reason}`,
  );
}

/** The backend answered `status` after the stream was opened, so it is said as an event. */
export function upstreamError(status: number, message: string) {
  return new ApiError(status, "upstream_error", message);
}

/** Nobody reads this one: the client is gone. It keeps the outcome type total. */
export function clientClosed() {
  return new ApiError(499, "client_closed_request", "Client closed the request");
}

export function cancelledByAdmin() {
  return new ApiError(503, "cancelled_by_admin", "The request was cancelled by an operator");
}

export function adminRequired(configured: boolean) {
  return configured
    ? new ApiError(401, "invalid_admin_key", "Invalid or missing admin key")
    : new ApiError(
      403,
      "admin_disabled",
      "Admin endpoints are disabled: set admin_key in config.yml",
    );
}

/** A batch line that had not run when its batch was cancelled. */
export function batchCancelled() {
  return new ApiError(409, "batch_cancelled", "The batch was cancelled");
}

/** A batch line given up on because the nodes running it kept stopping. */
export function maxAttemptsExceeded(attempts: number | string): LineError {
  return {
    code: "max_attempts_exceeded",
    message: `Gave up after ${attempts} attempts (the node running it stopped each time)`,
  };
}

export function shuttingDown() {
  return new ApiError(503, "shutting_down", "The proxy is shutting down");
}

/** The job store cannot be reached (Redis down): nothing can be accepted durably. */
export function storeUnavailable(reason: string) {
  return new ApiError(
    503,
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
    "internal_error",
    `Internal proxy error (request ${requestId}); see the proxy log`,
    { cause: err },
  );
}

/** An error's message, or the thrown value as text. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
